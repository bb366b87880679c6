"""The evaluation stage end to end on a local Ray cluster: the real hf engine on tiny models; a
verified benchmark, a graded-only MT-Bench and the benchmarks' real files on simulated models."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline.evaluate.stage import evaluate
from moaa_ray.stages.rundir import RunDir
from moaa_ray.tasks.addition import prompt_rows

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def loaded(tmp_path, raw: dict):
    """The config as a user writes it: a YAML file, loaded and validated."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def write_mt_bench(tmp_path):
    mt_bench = tmp_path / "mt_bench.jsonl"
    questions = [
        {"question_id": 1, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 2, "category": "math", "turns": ["2 + 2?", "Times 3?"], "reference": ["4", "12"]},
    ]  # fmt: skip
    mt_bench.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return mt_bench


def make_config(tmp_path):
    mt_bench = write_mt_bench(tmp_path)
    alpaca = tmp_path / "alpaca.json"
    rows = [
        {"instruction": "Name a color.", "output": "Blue.", "generator": "g", "dataset": "d"},
        {"instruction": "Name a fruit.", "output": None, "generator": "g", "dataset": "d"},
        {"instruction": "Name a tree.", "output": "An oak.", "generator": "g", "dataset": "d"},
    ]
    alpaca.write_text(json.dumps(rows))
    arena = tmp_path / "arena.jsonl"
    prompts = [
        {"uid": "u1", "category": "c", "prompt": "Sort a list."},
        {"uid": "u2", "prompt": "Hi."},
    ]
    arena.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    gpt4 = tmp_path / "gpt-4-0314.jsonl"
    answers = [
        {"uid": p["uid"], "messages": [{"role": "user", "content": p["prompt"]},
                                       {"role": "assistant", "content": {"answer": "Done."}}]}
        for p in prompts
    ]  # fmt: skip
    gpt4.write_text("".join(json.dumps(a) + "\n" for a in answers))
    model = {"engine": "hf", "num_cpus": 0.25, "max_batch_size": 8}
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {
            "policy": {"path": "tiny:llama-a", **model},
            "j1": {"path": "tiny:qwen2-b", **model},
            "j2": {"path": "tiny:llama-c", **model},
        },
        "evaluate": {
            "benchmarks": [
                {"path": str(mt_bench), "baseline": "model"},
                {"path": str(alpaca), "baseline": "answers"},
                {
                    "path": str(arena),
                    "baseline": "answers",
                    "baseline_answers_path": str(gpt4),
                    "style_control": True,
                },
            ],
            "model": "policy",
            "baseline_model": "j2",  # also a judge: one pool
            "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            "judging": {
                "judges": ["j1", "j2"],
                "aggregator_judge": "j1",
                "verdict_mode": "logprob",
                "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            },
            "grading_mode": "logprob",
            "bootstrap_rounds": 20,
        },
    }
    return loaded(tmp_path, raw)


def test_evaluation_writes_results_and_resumes_without_rejudging(ray_cluster, tmp_path):
    config = make_config(tmp_path)
    summary = evaluate(config, config.run_dir)
    stage = tmp_path / "run" / "evaluate"
    results = json.loads((stage / "results.json").read_text())
    assert results["benchmarks"] == summary["benchmarks"] and summary["rows_failed"] == 0
    mt, alpaca = results["benchmarks"]["mt_bench"], results["benchmarks"]["alpaca"]

    assert mt["wins"] + mt["ties"] + mt["losses"] == mt["judged"] == 2 and mt["abstained"] == 0
    assert alpaca["wins"] + alpaca["ties"] + alpaca["losses"] == alpaca["judged"] == 2
    assert alpaca["skipped_no_baseline"] == 1 and mt["skipped_no_baseline"] == 0
    assert (mt["baseline"], alpaca["baseline"]) == ("j2", "alpaca-answers")
    for bench in (mt, alpaca):
        assert 0.0 <= bench["lc_win_rate"] <= 100.0
        assert bench["bt"]["lower"] <= bench["bt"]["score"] <= bench["bt"]["upper"]
    assert set(mt["mt_bench"]["per_turn"]) == {"1", "2"}
    assert mt["mt_bench"]["num_graded"] == 4 and 1.0 <= mt["mt_bench"]["overall"] <= 10.0
    assert alpaca["mt_bench"] is None  # only MT-Bench questions are graded
    assert set(mt["mt_bench"]["per_category"]) == {"writing", "math"}
    assert results["self_judged"] is False  # no preferences section: nothing was labelled
    report = (stage / "report.md").read_text()
    assert "### mt_bench" in report and "### alpaca" in report and "| policy | 2 |" in report
    assert (stage / "scores.png").read_bytes().startswith(b"\x89PNG")

    table = RunDir(config.run_dir).stage("evaluate").read().to_pylist()
    rows = {(r["benchmark"], r["question_id"]): r for r in table}
    assert set(rows) == {
        ("mt_bench", "1"), ("mt_bench", "2"), ("alpaca", "0"), ("alpaca", "2"),
        ("arena", "u1"), ("arena", "u2"),
    }  # fmt: skip
    # Arena-Hard: each judge played both games with arena-hard-auto's prompt; tiny random judges
    # write no verdict label, so every game is an abstention and there is no score.
    for uid in ("u1", "u2"):
        games = [(v["judge"], v["game"]) for v in rows["arena", uid]["arena_verdicts"]]
        assert sorted(games) == [("j1", 1), ("j1", 2), ("j2", 1), ("j2", 2)]
    arena_result = results["benchmarks"]["arena"]
    assert arena_result["judged"] == 2 and arena_result["abstain_rate"] == 1.0
    assert arena_result["bt"] is None and arena_result["baseline"] == "gpt-4-0314-answers"
    two_turns = rows["mt_bench", "1"]
    assert len(two_turns["model_answers"]) == len(two_turns["baseline_answers"]) == 2
    assert rows["alpaca", "0"]["baseline_answers"] == ["Blue."]  # the file's answer, not a model's
    audit = pq.read_table(stage / "judgments").to_pylist()
    assert len(audit) == 4 * 2 * 3  # ensemble-judged questions x orders x (2 judges + aggregator)
    assert {a["judge"] for a in audit} == {"j1", "j2", "aggregator"}
    manifest = RunDir(config.run_dir).stage_status("evaluate")
    assert manifest["status"] == "done" and manifest["benchmarks"] == results["benchmarks"]

    again = evaluate(config, config.run_dir)
    assert again["benchmarks"] == results["benchmarks"]  # resumed: the same questions and scores
    assert len(pq.read_table(stage / "judgments").to_pylist()) == len(audit)


def test_a_verified_benchmark_reports_accuracy_without_judges_and_resumes(ray_cluster, tmp_path):
    prompts = tmp_path / "addition.jsonl"
    pairs = [(1, 2), (3, 4), (10, 20), (7, 8), (40, 2), (99, 1)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(pairs, "eval")))
    raw = {
        "run_dir": str(tmp_path / "run"),
        "verifier": "moaa_ray.tasks.addition:verify",
        "models": {"policy": {"path": "sim/policy", "engine": "simulated", "num_cpus": 0}},
        "evaluate": {
            "benchmarks": [{"path": str(prompts), "format": "verified"}],
            "model": "policy",
            "sampling": {"max_new_tokens": 8},
        },
    }
    config = loaded(tmp_path, raw)

    summary = evaluate(config, config.run_dir)
    stage = tmp_path / "run" / "evaluate"
    results = json.loads((stage / "results.json").read_text())
    addition = results["benchmarks"]["addition"]
    assert summary["rows_failed"] == 0 and summary["accuracy"] == results["accuracy"]
    assert 0.0 <= summary["accuracy"]["addition"] <= 1.0
    assert (addition["format"], addition["total"], addition["verifiable"]) == ("verified", 6, 6)
    rows = RunDir(config.run_dir).stage("evaluate").read().to_pylist()
    assert sorted(r["question_id"] for r in rows) == sorted(f"eval-{a}+{b}" for a, b in pairs)
    assert {r["correct"] for r in rows} <= {True, False}  # every prompt is an addition question
    assert addition["correct"] == sum(r["correct"] for r in rows)
    assert all(r["baseline_answers"] == [] and len(r["model_answers"]) == 1 for r in rows)
    assert not list((stage / "judgments").glob("*.parquet"))  # nobody judged
    assert "### addition" in (stage / "report.md").read_text()

    again = evaluate(config, config.run_dir)
    assert again["skipped"] and again["rows_written"] == 0  # nothing answered again
    assert again["benchmarks"] == results["benchmarks"]
    assert len(RunDir(config.run_dir).stage("evaluate").read()) == 6


def test_a_graded_only_mt_bench_is_graded_without_baseline_or_judges(ray_cluster, tmp_path):
    simulated = {"engine": "simulated", "num_cpus": 0}
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {
            "policy": {"path": "sim/policy", **simulated},
            "grader": {"path": "sim/grader", **simulated},
        },
        "evaluate": {
            "benchmarks": [{"path": str(write_mt_bench(tmp_path)), "baseline": "none"}],
            "model": "policy",
            "grader": "grader",
            "sampling": {"max_new_tokens": 8},
        },
    }
    config = loaded(tmp_path, raw)

    summary = evaluate(config, config.run_dir)
    stage = tmp_path / "run" / "evaluate"
    mt = json.loads((stage / "results.json").read_text())["benchmarks"]["mt_bench"]
    assert summary["rows_failed"] == 0 and summary["benchmarks"]["mt_bench"] == mt
    assert (mt["baseline"], mt["graded"]) == (None, 2) and "win_rate" not in mt
    assert mt["mt_bench"]["num_graded"] == 4 and 1.0 <= mt["mt_bench"]["overall"] <= 10.0
    assert set(mt["mt_bench"]["per_turn"]) == {"1", "2"}
    assert set(mt["mt_bench"]["per_category"]) == {"writing", "math"}
    rows = RunDir(config.run_dir).stage("evaluate").read().to_pylist()
    assert all(len(r["model_answers"]) == 2 and r["baseline_answers"] == [] for r in rows)
    assert not list((stage / "judgments").glob("*.parquet"))  # nobody judged
    report = (stage / "report.md").read_text()
    assert "### mt_bench" in report and "win / tie / loss" not in report


def test_the_benchmarks_real_files_are_answered_judged_and_scored(ray_cluster, tmp_path):
    """MT-Bench (all 80 questions, GPT-4 references), Arena-Hard v0.1 against gpt-4-0314's answers
    and AlpacaEval 2 against GPT-4 Turbo's outputs, in their native files, judged their own ways by
    simulated judges: every question written, every benchmark scored."""
    data = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
    simulated = {"engine": "simulated", "num_cpus": 0, "max_batch_size": 16}
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {name: {"path": f"sim/{name}", **simulated} for name in ("policy", "j1", "j2")},
        "evaluate": {
            "benchmarks": [
                {
                    "path": str(data / "mt_bench_question.jsonl"),
                    "reference_answers_path": str(data / "mt_bench_reference_answer_gpt-4.jsonl"),
                    "baseline": "none",
                },
                {
                    "path": str(data / "arena_hard_v0.1_question.jsonl"),
                    "baseline_answers_path": str(
                        data / "arena_hard_v0.1_model_answer_gpt-4-0314.jsonl"
                    ),
                },
                {
                    "path": str(data / "alpaca_eval_gpt4_1106_preview_outputs.json"),
                    "judge": "alpaca_eval",
                },
            ],
            "model": "policy",
            "sampling": {"max_new_tokens": 16},
            "judging": {"judges": ["j1", "j2"], "sampling": {"max_new_tokens": 16}},
            "grader": "j1",
            "bootstrap_rounds": 20,
        },
    }
    config = loaded(tmp_path, raw)

    summary = evaluate(config, config.run_dir)
    assert summary["rows_written"] == 80 + 24 + 24 and summary["rows_rejected"] == 0
    benchmarks = json.loads((tmp_path / "run" / "evaluate" / "results.json").read_text())
    mt = benchmarks["benchmarks"]["mt_bench_question"]
    arena = benchmarks["benchmarks"]["arena_hard_v0.1_question"]
    alpaca = benchmarks["benchmarks"]["alpaca_eval_gpt4_1106_preview_outputs"]
    grades = mt["mt_bench"]
    assert grades["num_graded"] == 160 and set(grades["per_turn"]) == {"1", "2"}
    assert len(grades["per_category"]) == 8  # writing ... humanities, 10 questions each
    assert arena["baseline"] == "arena_hard_v0.1_model_answer_gpt-4-0314-answers"
    assert arena["judged"] == 24 and arena["abstain_rate"] == 0.0
    assert arena["bt"]["lower"] <= arena["bt"]["score"] <= arena["bt"]["upper"]
    assert alpaca["judged"] == 24 and alpaca["wins"] + alpaca["ties"] + alpaca["losses"] == 24
    assert 0.0 <= alpaca["win_rate"] <= 100.0 and 0.0 <= alpaca["lc_win_rate"] <= 100.0
