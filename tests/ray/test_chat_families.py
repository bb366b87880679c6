"""Chat templates of the families users bring, in every role, through generate, preferences and
evaluate on a local Ray cluster with the real hf engine.

``tiny:gemma-style`` refuses a system message and demands strict alternation (Gemma-2's template);
``tiny:mistral-style`` takes an optional system message, then strict alternation (Mistral's). The
pipeline sends system messages (the MoA aggregate instruction, MT-Bench and Arena-Hard judge prompts,
input conversations with a system turn); every row must still be written.
"""

import json

import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline import generate
from moaa_ray.pipeline.evaluate.stage import evaluate
from moaa_ray.pipeline.preferences import build_preferences
from moaa_ray.stages.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "More?"},
    ]
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_config(tmp_path, family):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Topic {i}?"} for i in range(3)])
    chats = write_jsonl(tmp_path / "chats.jsonl", [CONVERSATION])
    mt_bench = write_jsonl(
        tmp_path / "mt_bench.jsonl",
        [
            {"question_id": 1, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
            {"question_id": 2, "category": "math", "turns": ["2 + 2?", "Times 3?"],
             "reference": ["4", "12"]},
        ],
    )  # fmt: skip
    model = {"path": f"tiny:{family}", "engine": "hf", "num_cpus": 0.25, "max_batch_size": 8}
    judging = {
        "judges": ["m", "m2"],
        "aggregator_judge": "m",
        "criteria_selector": "m2",
        "verdict_mode": "logprob",
        "sampling": {"temperature": 0.0, "max_new_tokens": 8},
    }
    inputs = [{"path": prompts}, {"path": chats, "messages_column": "messages"}]
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {"m": model, "m2": {**model, "max_batch_size": 4}},
        "generate": {
            "inputs": inputs,
            "proposers": ["m", "m2"],
            "aggregator": "m",
            "sampling": {"max_new_tokens": 8, "temperature": 0.8},
            "truncated_answers": "keep",  # random tiny models never end an answer
        },
        "preferences": {
            "inputs": inputs,
            "policy": "m",
            "num_samples": 3,
            "sampling": {"temperature": 1.0, "max_new_tokens": 8},
            "truncated_samples": "keep",
            "judging": judging,
        },
        "evaluate": {
            "benchmarks": [{"path": mt_bench, "baseline": "model"}],
            "model": "m",
            "baseline_model": "m2",
            "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            "judging": judging,
            "grader": "m2",
            "grading_mode": "logprob",
            "bootstrap_rounds": 5,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.mark.parametrize("family", ["gemma-style", "mistral-style"])
def test_every_role_writes_every_row(ray_cluster, tmp_path, family):
    config = make_config(tmp_path, family)

    made = generate.generate_sft(config, config.run_dir)
    assert made["rows_written"] == 4 and made["rows_rejected"] == made["rows_failed"] == 0
    rows = RunDir(config.run_dir).stage("generate").read().to_pylist()
    chat = next(r for r in rows if r["messages"][0]["role"] == "system")
    # The data keeps the conversation's own roles; only the rendering folds the system turn.
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert all(p["error"] is None for r in rows for p in r["proposals"])

    judged = build_preferences(config, config.run_dir)
    assert judged["rows_rejected"] == judged["rows_failed"] == 0
    assert judged["pairs_kept"] == 4 and judged["abstain_rate"] == 0.0

    scored = evaluate(config, config.run_dir)
    assert scored["rows_failed"] == 0
    mt = scored["benchmarks"]["mt_bench"]
    assert mt["judged"] == 2 and mt["abstained"] == 0
    assert mt["mt_bench"]["num_graded"] == 4  # both turns of both questions, by the grader
