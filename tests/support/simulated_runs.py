"""Runs on simulated models for the Ray tests: a config of prompts and models, and the models."""

import json

import yaml

POISON = "POISON-PILL"
SIM = {"engine": "simulated", "num_cpus": 0, "max_batch_size": 4, "retry_backoff_s": 0.05}


def write_config(tmp_path, models, prompts, **sections):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    inputs = [{"path": str(path)}]
    raw = {"run_dir": str(tmp_path / "run"), "models": models}
    if "generate" in sections:
        raw["generate"] = {"inputs": inputs, "batch_size": 4, **sections["generate"]}
    if "preferences" in sections:
        raw["preferences"] = {"inputs": inputs, "batch_size": 4, **sections["preferences"]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def sim(name, **faults):
    return {"path": name, **SIM, "simulated": {"answer_tokens": 6, **faults}}


MOA = {"proposers": ["p1", "p2"], "aggregator": "agg", "sampling": {"max_new_tokens": 6}}
