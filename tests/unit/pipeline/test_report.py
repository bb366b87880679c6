"""The evaluation report: tables per benchmark and a plot, from results as the stage writes them."""

import json
from pathlib import Path

from moaa_ray.config import load_config
from moaa_ray.core.winrates import LC_FALLBACK_LABEL
from moaa_ray.pipeline.evaluate.report import (
    earlier_evaluations,
    evaluated_models,
    plot_scores,
    render_report,
    write_report,
)
from moaa_ray.pipeline.evaluate.results import benchmark_results, verified_results
from moaa_ray.pipeline.evaluate.sources import MT_BENCH_GRADES, OWN_BT, OWN_PAIRWISE_MT_BENCH

REPO = Path(__file__).resolve().parents[3]

STATS = json.dumps({"judgments": 2, "abstains": 0, "position_flips": 0, "pairs": 1})


def results(scores, grades=(), shared=()):
    rows = [
        {
            "score": score,
            "model_answers": ["m" * 50],
            "baseline_answers": ["b" * 40],
            "grades": list(grades),
            "stats": STATS,
        }
        for score in scores
    ]
    bench = benchmark_results(rows, "policy", "gpt-4-0314", 0, bootstrap_rounds=20)
    return {
        "self_judged": bool(shared),
        "shared_judges": list(shared),
        "benchmarks": {"arena": bench},
    }


def test_report_has_a_row_per_model_and_the_mt_bench_grades_per_turn_and_category():
    grades = [
        {"turn": 1, "category": "math", "score": 8.0},
        {"turn": 2, "category": "writing", "score": 6.0},
    ]
    evaluations = [("SFT", results([0.0, 0.5, 1.0])), ("final", results([1.0, 1.0, 0.5], grades))]
    text = render_report(evaluations)
    assert "| SFT | 3 | 1 / 1 / 1 | 50.0 |" in text
    assert "| final | 3 | 2 / 1 / 0 | 83.3 |" in text
    assert "Against `gpt-4-0314`" in text
    # Each figure says whose it is: MT-Bench's win rates are the project's own figure, not
    # FastChat's pairwise-baseline, and so is the BT score outside Arena-Hard; the grades are
    # FastChat's.
    whose = next(line for line in text.splitlines() if line.startswith("Whose figures: "))
    assert f"win rate: {OWN_PAIRWISE_MT_BENCH}" in whose and f"BT score: {OWN_BT}" in whose
    assert f"MT-Bench grades: {MT_BENCH_GRADES}" in whose
    assert "| model | turn 1 | turn 2 | overall | math | writing |" in text
    assert "| final | 8.00 | 6.00 | 7.00 | 8.00 | 6.00 |" in text
    assert "Self-judged" not in text


def test_report_warns_when_the_judges_labelled_the_training_pairs(tmp_path):
    path = write_report(tmp_path, [("policy", results([1.0, None], shared=["judge-a"]))])
    text = path.read_text()
    assert "**Self-judged:** judge-a" in text
    assert "| policy | 2 | 1 / 0 / 0 | 100.0 |" in text
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")


def test_an_lc_fallback_is_labelled_so_in_the_table_and_the_plot(tmp_path, monkeypatch):
    import matplotlib.figure

    legend: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def savefig(figure, *args, **kwargs):
        legend.extend(t.get_text() for ax in figure.axes for t in ax.get_legend().get_texts())
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    evaluation = results([1.0, 0.0, 1.0])  # no gamed baseline: the LC is a fallback

    plot_scores([("policy", evaluation)], tmp_path / "scores.png")
    text = render_report([("policy", evaluation)])

    assert LC_FALLBACK_LABEL in legend and "LC win rate" not in legend
    lc = evaluation["benchmarks"]["arena"]["lc_win_rate"]
    assert f"| {lc:.1f} (fallback) |" in text
    assert f"{LC_FALLBACK_LABEL}: no gamed_baseline_path (AlpacaEval's df_gamed.csv)" in text


def test_verified_benchmarks_get_an_accuracy_row_per_round_and_a_bar(tmp_path):
    def with_addition(results, verdicts):
        rows = [{"correct": c, "sample_accuracy": c} for c in verdicts]
        addition = verified_results(rows)
        return results | {"benchmarks": results["benchmarks"] | {"addition": addition}}

    evaluations = [
        ("SFT", with_addition(results([0.5]), [True, False, False, None])),
        ("DPO round 1", with_addition(results([1.0]), [True, True, False, None])),
        ("final", with_addition(results([1.0]), [None])),
    ]
    path = write_report(tmp_path, evaluations)
    text = path.read_text()
    assert "### addition" in text and "| model | accuracy (%) | 95% interval |" in text
    assert "| SFT | 33.3 | 6.2–79.2 | 1 | 1 / 3 | 4 |" in text
    assert "| DPO round 1 | 66.7 | 20.8–93.8 | 1 | 2 / 3 | 4 |" in text
    assert "| final | – | – | 1 | 0 / 0 | 1 |" in text
    assert "### arena" in text and "| final | 1 | 1 / 0 / 0 |" in text  # judged ones unchanged
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")


def test_earlier_evaluations_are_found_in_the_given_order_with_their_labels(tmp_path):
    for folder in ("round-10", "base", "round-2", "round-3"):
        (tmp_path / folder / "evaluate").mkdir(parents=True)
        (tmp_path / folder / "evaluate" / "results.json").write_text(json.dumps({"n": folder}))
    (tmp_path / "round-1").mkdir()  # a round that was not evaluated
    models = [("start", "base"), ("DPO round 1", "round-1"), ("DPO round 2", "round-2")]
    found = earlier_evaluations(tmp_path, [*models, ("DPO round 10", "round-10")])
    assert [label for label, _ in found] == ["start", "DPO round 2", "DPO round 10"]
    assert [r["n"] for _, r in found] == ["base", "round-2", "round-10"]  # round 3: stale


def test_only_the_models_this_run_evaluates_are_reported(monkeypatch):
    monkeypatch.chdir(REPO)

    def models(*overrides):
        config = load_config(REPO / "configs" / "demo.yaml", list(overrides))
        return [label for label, _ in evaluated_models(config)]

    # The last round's model is the final one, evaluated in evaluate/.
    every_round = "evaluate.every_round=true"
    assert models("iterations=3", every_round) == ["start", "SFT", "DPO round 1", "DPO round 2"]
    assert models("iterations=1", every_round) == ["start", "SFT"]  # a rerun with fewer
    assert models("iterations=3") == []  # without every_round nothing earlier is evaluated
    assert models("iterations=2", every_round, "sft=null") == ["start", "DPO round 1"]


def test_a_graded_only_benchmark_reports_its_grades_and_no_win_rates(tmp_path):
    grades = [
        {"turn": 1, "category": "writing", "score": 8.0},
        {"turn": 2, "category": "writing", "score": 6.0},
    ]
    rows = [{"grades": grades, "stats": json.dumps({"truncated_model_answers": 1})}]
    graded = benchmark_results(rows, "policy", None, 0, bootstrap_rounds=20)
    assert graded["baseline"] is None and "win_rate" not in graded and "bt" not in graded
    assert graded["truncated_answers"] == {"model": 1}
    evaluations = [
        ("SFT", {"benchmarks": {"mt": graded}}),
        ("final", {"benchmarks": {"mt": graded}}),
    ]
    path = write_report(tmp_path, evaluations)
    text = path.read_text()
    assert "### mt" in text and "| model | turn 1 | turn 2 | overall | writing |" in text
    assert "| final | 8.00 | 6.00 | 7.00 | 7.00 |" in text
    assert "win / tie / loss" not in text and "Against" not in text
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")
