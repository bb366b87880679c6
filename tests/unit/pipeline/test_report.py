"""The evaluation report: tables per benchmark and a plot, from results as the stage writes them."""

import json

from moaa_ray.pipeline.evaluate import benchmark_results, earlier_evaluations, verified_results
from moaa_ray.pipeline.report import render_report, write_report

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
    assert "| model | turn 1 | turn 2 | overall | math | writing |" in text
    assert "| final | 8.00 | 6.00 | 7.00 | 8.00 | 6.00 |" in text
    assert "Self-judged" not in text


def test_report_warns_when_the_judges_labelled_the_training_pairs(tmp_path):
    path = write_report(tmp_path, [("policy", results([1.0, None], shared=["judge-a"]))])
    text = path.read_text()
    assert "**Self-judged:** judge-a" in text
    assert "| policy | 2 | 1 / 0 / 0 | 100.0 |" in text
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")


def test_verified_benchmarks_get_an_accuracy_row_per_round_and_a_bar(tmp_path):
    def with_addition(results, verdicts):
        addition = verified_results([{"correct": c} for c in verdicts])
        return results | {"benchmarks": results["benchmarks"] | {"addition": addition}}

    evaluations = [
        ("SFT", with_addition(results([0.5]), [True, False, False, None])),
        ("DPO round 1", with_addition(results([1.0]), [True, True, False, None])),
        ("final", with_addition(results([1.0]), [None])),
    ]
    path = write_report(tmp_path, evaluations)
    text = path.read_text()
    assert "### addition" in text and "| model | accuracy (%) | correct / verifiable |" in text
    assert "| SFT | 33.3 | 1 / 3 | 4 |" in text and "| DPO round 1 | 66.7 | 2 / 3 | 4 |" in text
    assert "| final | – | 0 / 0 | 1 |" in text
    assert "### arena" in text and "| final | 1 | 1 / 0 / 0 |" in text  # judged ones unchanged
    assert (tmp_path / "scores.png").read_bytes().startswith(b"\x89PNG")


def test_earlier_rounds_are_found_in_round_order(tmp_path):
    for number in (10, 0, 2):
        folder = tmp_path / f"round-{number}" / "evaluate"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"benchmarks": {}, "n": number}))
    (tmp_path / "round-1").mkdir()  # a round that was not evaluated
    found = earlier_evaluations(tmp_path)
    assert [label for label, _ in found] == ["SFT", "DPO round 2", "DPO round 10"]
    assert [r["n"] for _, r in found] == [0, 2, 10]
