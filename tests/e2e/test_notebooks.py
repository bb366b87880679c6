"""Both notebooks execute top to bottom on the README's demo and toy addition runs (they are stored
without outputs), and every cell that plots shows its figure."""

import json
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
PLOTS = re.compile(r"\bplt\.|\.plot\b|\bax\.")  # matplotlib, pandas plotting, an Axes


def cells_without_their_plot(notebook) -> list[str]:
    """The sources of code cells that plot but have no PNG among their outputs."""
    return [
        cell.source
        for cell in notebook.cells
        if cell.cell_type == "code"
        and PLOTS.search(cell.source)
        and not any("image/png" in out.get("data", {}) for out in cell.outputs)
    ]


def plotting_cells(notebook) -> int:
    return sum(1 for c in notebook.cells if c.cell_type == "code" and PLOTS.search(c.source))


def test_notebooks_run_on_the_readme_runs_and_show_their_plots(demo_run, toy_run, monkeypatch):
    """On the README's demo and toy runs (shared with their own tests): each notebook's `moaa run`
    resumes a finished run, so the notebooks read what a user's first runs wrote."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    demo_run.check()
    toy_run.check()
    toy_dir = toy_run.run_dir
    # The notebooks' default config is the real model's (configs/smollm2.yaml).
    monkeypatch.setenv("MOAA_CONFIG", "configs/demo.yaml")
    monkeypatch.setenv("MOAA_RUN_DIR", str(demo_run.run_dir))
    monkeypatch.setenv("MOAA_TOY_RUN_DIR", str(toy_dir))
    for name in ("01_quickstart.ipynb", "02_analysis.ipynb"):
        notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
        NotebookClient(notebook, timeout=900, resources={"metadata": {"path": str(REPO)}}).execute()
        assert plotting_cells(notebook) > 0, f"{name} plots nothing"
        assert cells_without_their_plot(notebook) == [], f"{name}: figures not shown"
    from moaa_ray.stages.rundir import RunDir

    rounds = [toy_dir / f"round-{r}" for r in (1, 2)]
    ids = [set(RunDir(r).stage("preferences").read().column("row_id").to_pylist()) for r in rounds]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # fresh prompts each round
    toy = json.loads((toy_dir / "manifest.json").read_text())["models"]
    assert [m["stage"] for m in toy] == ["base", "moa-answers", "sft", "round-1/dpo", "round-2/dpo"]
    accuracy = {m["stage"]: m["accuracy"] for m in toy}
    shares = [accuracy.pop("moa-answers"), *(a["addition"] for a in accuracy.values())]
    assert all(0 <= share <= 1 for share in shares), toy
    assert len(toy[1]["proposer_accuracy"]) == 3  # a dashed line per proposer
