"""Answers cut at max_new_tokens, end to end on a local Ray cluster: flagged by the engine, counted by
every stage, dropped as SFT targets and DPO samples unless the config keeps them.

The models are the ``simulated`` engine, whose ``answer_tokens`` is the answer's natural length: above
the call's ``max_new_tokens`` the answer is cut and reported with finish reason ``length``, as the
real engines report it (tested in tests/unit/engines and tests/vllm).
"""

import json

import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline.evaluate.stage import evaluate
from moaa_ray.pipeline.generate import generate_sft
from moaa_ray.pipeline.preferences import build_preferences
from moaa_ray.stages.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

BUDGET = {"max_new_tokens": 6}


def sim(name, words):
    return {
        "path": name,
        "engine": "simulated",
        "num_cpus": 0,
        "simulated": {"answer_tokens": words},
    }


def make_config(tmp_path, name, **sections):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(4)))
    models = {"short": sim("short", 6), "long": sim("long", 20), "judge": sim("judge", 6)}
    raw = {"run_dir": str(tmp_path / name), "models": models}
    for section, values in sections.items():
        inputs = [{"path": str(prompts)}] if section != "evaluate" else None
        raw[section] = {"inputs": inputs, **values} if inputs else values
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_a_cut_aggregator_answer_is_no_sft_target_unless_kept(ray_cluster, tmp_path):
    moa = {"proposers": ["short", "long"], "aggregator": "long", "sampling": BUDGET}
    config = make_config(tmp_path, "drop", generate=moa)
    summary = generate_sft(config, config.run_dir)
    assert summary["rows_written"] == 0 and summary["rows_rejected"] == 4
    assert summary["truncated_answers_dropped"] == 4
    reasons = (RunDir(config.run_dir).root / "generate" / "rejects.jsonl").read_text().splitlines()
    assert all("cut at max_new_tokens" in json.loads(r)["reason"] for r in reasons)

    config = make_config(tmp_path, "keep", generate={**moa, "truncated_answers": "keep"})
    summary = generate_sft(config, config.run_dir)
    assert summary["rows_written"] == 4 and summary["truncated_answers_dropped"] == 0
    assert summary["truncated_references"] == 4  # the long proposer's, kept as references
    rows = RunDir(config.run_dir).stage("generate").read().to_pylist()
    flags = {(p["model"], p["layer"]): p["truncated"] for p in rows[0]["proposals"]}
    assert flags == {("short", 0): False, ("long", 0): True, ("long", 1): True}


def test_cut_samples_are_neither_judged_nor_dpo_samples_unless_kept(ray_cluster, tmp_path):
    judging = {"judges": ["judge"], "verdict_mode": "text", "sampling": BUDGET}
    prefs = {"policy": "long", "num_samples": 3, "sampling": BUDGET, "judging": judging}
    config = make_config(tmp_path, "drop", preferences=prefs)
    stats = build_preferences(config, config.run_dir)
    assert stats["truncated_samples"] == 4 * 3 and stats["pairs_kept"] == 0
    assert stats["prompts_dropped"] == {"fewer than two distinct samples (0)": 4}

    config = make_config(tmp_path, "keep", preferences={**prefs, "truncated_samples": "keep"})
    stats = build_preferences(config, config.run_dir)
    assert (
        stats["truncated_samples"] == 0
        and stats["pairs_kept"] + sum(stats["prompts_dropped"].values()) == 4
    )
    assert stats["pairs_kept"] > 0


def test_evaluation_judges_cut_answers_as_written_and_counts_them(ray_cluster, tmp_path):
    questions = tmp_path / "questions.jsonl"
    rows = [{"question_id": i, "category": "writing", "turns": [f"Write {i}."]} for i in range(3)]
    questions.write_text("".join(json.dumps(q) + "\n" for q in rows))
    evaluation = {
        "benchmarks": [
            {"path": str(questions), "baseline": "model", "category_temperatures": False}
        ],
        "model": "long",
        "baseline_model": "short",
        "sampling": BUDGET,
        "judging": {"judges": ["judge"], "sampling": BUDGET},
        "bootstrap_rounds": 5,
    }
    config = make_config(tmp_path, "eval", evaluate=evaluation)
    summary = evaluate(config, config.run_dir)
    result = summary["benchmarks"]["questions"]
    assert result["judged"] == 3
    assert result["truncated_answers"] == {"model": 3, "baseline": 0}
