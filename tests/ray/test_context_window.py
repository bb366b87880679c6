"""Prompts fitted to small context windows on a local Ray cluster with the real hf engine: references,
judged answers and evaluations are cut evenly and counted, a user prompt that cannot fit rejects its
row, and no engine call fails for length."""

import json

import pytest
import yaml

from moaa_ray.config import load_config
from moaa_ray.pipeline.generate import generate_sft
from moaa_ray.pipeline.preferences import build_preferences
from moaa_ray.stages.rundir import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

# Tokens. The packaged prompts alone take ~390 (MoA aggregator) and ~370 (judge) of the tiny
# tokenizer's tokens, so four 40-token references or two 100-token answers overflow it.
WINDOW = 520


def make_config(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Name a colour, number {i}."} for i in range(3)]
    rows.append({"prompt": "Tell me everything. " + "please " * 300})  # no window holds it
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = {"engine": "hf", "num_cpus": 0.25, "max_batch_size": 8}
    tight = {**model, "max_model_len": WINDOW}
    sampling = {"max_new_tokens": 40, "temperature": 1.0}  # four 40-token references overflow
    raw = {
        "run_dir": str(tmp_path / "run"),
        "models": {
            "wide": {"path": "tiny:llama-a", **model},
            "narrow": {"path": "tiny:qwen2-b", **tight},
        },
        "generate": {
            "inputs": [{"path": str(prompts)}],
            "proposers": ["wide", "wide", "wide", "wide"],
            "aggregator": "narrow",
            "sampling": sampling,
            "truncated_answers": "keep",  # random tiny models never end an answer
        },
        "preferences": {
            "inputs": [{"path": str(prompts)}],
            "policy": "wide",
            "num_samples": 3,
            "sampling": {**sampling, "max_new_tokens": 100},
            "truncated_samples": "keep",
            "judging": {
                "judges": ["narrow"],
                "aggregator_judge": "wide",
                "verdict_mode": "logprob",
                "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_prompts_are_cut_to_fit_and_a_prompt_that_cannot_fit_is_rejected(ray_cluster, tmp_path):
    config = make_config(tmp_path)
    made = generate_sft(config, config.run_dir)
    assert made["rows_failed"] == 0  # no call failed for length
    assert made["rows_written"] == 3 and made["shortened_prompts"] == 3
    [reject] = [json.loads(r) for r in _rejects(config, "generate")]
    assert "context window" in reject["reason"] and not reject["failed"]
    rows = RunDir(config.run_dir).stage("generate").read().to_pylist()
    assert all(r["messages"][-1]["content"] for r in rows)

    judged = build_preferences(config, config.run_dir)
    assert judged["rows_failed"] == 0 and judged["shortened_prompts"] > 0
    assert judged["pairs_kept"] == 3
    assert any("context window" in reason for reason in judged["prompts_dropped"])


def _rejects(config, stage):
    return (RunDir(config.run_dir).root / stage / "rejects.jsonl").read_text().splitlines()
