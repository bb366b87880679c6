"""Both notebooks execute top to bottom on a small demo run and a small toy addition run (they are
stored without outputs), and every cell that plots shows its figure."""

import json
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[1]
# A smaller demo with two rounds of sample/judge/DPO, each on its own slice of the prompts.
SMALL = (
    "generate.inputs.0.limit=6 generate.inputs.1.limit=1 sft.global_batch_size=4 sft.max_steps=2 "
    "iterations=2 preferences.inputs.0.limit=8 dpo.global_batch_size=2 dpo.max_steps=2"
)
# The toy addition run (quickstart section 6) on 64 prompts per stage and one DPO round, in batches
# of 8: 64 prompts keep only about 30 pairs.
TOY = (
    "generate.inputs.0.limit=64 preferences.inputs.0.limit=64 evaluate.benchmarks.0.limit=64 "
    "iterations=1 dpo.global_batch_size=8 dpo.micro_batch_size=8"
)
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


def test_notebooks_run_on_demo_outputs_and_show_their_plots(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("MOAA_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("MOAA_DEMO_OVERRIDES", SMALL)
    monkeypatch.setenv("MOAA_TOY_RUN_DIR", str(tmp_path / "toy"))
    monkeypatch.setenv("MOAA_TOY_OVERRIDES", TOY)
    for name in ("01_quickstart.ipynb", "02_analysis.ipynb"):
        notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
        NotebookClient(notebook, timeout=900, resources={"metadata": {"path": str(REPO)}}).execute()
        assert plotting_cells(notebook) > 0, f"{name} plots nothing"
        assert cells_without_their_plot(notebook) == [], f"{name}: figures not shown"
    assert (tmp_path / "run" / "evaluate" / "results.json").exists()
    from moaa_ray.runs.rundir import RunDir

    rounds = [tmp_path / "run" / f"round-{r}" for r in (1, 2)]
    ids = [set(RunDir(r).stage("preferences").read().column("row_id").to_pylist()) for r in rounds]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # fresh prompts each round
    assert (rounds[1] / "dpo" / "model" / "config.json").exists()
    toy = json.loads((tmp_path / "toy" / "manifest.json").read_text())["models"]
    assert [m["stage"] for m in toy] == ["base", "moa-data", "sft", "round-1/dpo"]
    accuracy = {m["stage"]: m["accuracy"] for m in toy}
    shares = [accuracy.pop("moa-data"), *(a["addition"] for a in accuracy.values())]
    assert all(0 <= share <= 1 for share in shares), toy
    assert len(toy[1]["proposer_accuracy"]) == 3  # a dashed line per proposer
