"""MoA SFT-data throughput: moaa_ray (streaming and staged) vs a plain sequential script, one run.

The baseline is what one writes without moaa_ray: load every model in one process, and for each prompt
ask each proposer, then the aggregator, one call at a time. Both sides load their models inside the
timed region and use the same tiny models, prompts, layer plan and sampling. Prints the ratios
(baseline seconds / moaa_ray seconds; above 1 means moaa_ray is faster).

Run as:
    .venv/bin/python benchmarks/bench_moa_generation.py [--prompts 48] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

PROPOSERS = ["llama-a", "qwen2-b", "llama-c"]
AGGREGATOR = "qwen2-d"


def write_config(directory: Path, prompts: int, max_new_tokens: int, mode: str) -> Path:
    rows = [{"prompt": f"Question {i}: explain topic number {i} briefly."} for i in range(prompts)]
    (directory / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    models = {
        name: {"path": f"tiny:{name}", "num_cpus": 0.5, "max_batch_size": 8}
        for name in [*PROPOSERS, AGGREGATOR]
    }
    config = {
        "ray": {"num_cpus": 8},
        "models": models,
        "generate": {
            "inputs": [{"path": str(directory / "prompts.jsonl")}],
            "proposers": PROPOSERS,
            "aggregator": AGGREGATOR,
            "sampling": {"temperature": 0.7, "max_new_tokens": max_new_tokens},
            "mode": mode,
            "batch_size": 8,
        },
    }
    path = directory / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_baseline(config_path: Path) -> float:
    """Sequential: every call is one prompt to one model, in one process."""
    from moaa_ray.config import load_config
    from moaa_ray.core.moa import layer_requests, new_state, plan_layers, record_output
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.engines.hf import HFEngine
    from moaa_ray.pipeline.inputs import load_states

    started = time.monotonic()
    config = load_config(config_path)
    gen = config.generate
    engines = {name: HFEngine(config.models[name]) for name in [*PROPOSERS, AGGREGATOR]}
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    params = SamplingParams(
        gen.sampling.temperature, gen.sampling.top_p, gen.sampling.max_new_tokens
    )
    states, _ = load_states(gen.inputs)
    for state in states:
        state = new_state(state["row_id"], state["messages"], "bench")
        for layer in range(len(plan.layers)):
            for slot, model, conversation in layer_requests(
                state, plan, 0, layer, gen.aggregate_template
            ):
                text = engines[model].chat([conversation], params)[0][0]
                record_output(state, 0, layer, slot, model, text, None)
    return time.monotonic() - started


def run_moaa(config_path: Path, run_dir: Path) -> float:
    import ray

    from moaa_ray.config import load_config
    from moaa_ray.pipeline.generate import generate_sft

    started = time.monotonic()
    summary = generate_sft(load_config(config_path), run_dir)
    elapsed = time.monotonic() - started
    ray.shutdown()
    assert summary["rows_failed"] == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        streaming = write_config(directory, args.prompts, args.max_new_tokens, "streaming")
        staged = write_config(directory, args.prompts, args.max_new_tokens, "staged")
        baseline_s = run_baseline(streaming)
        streaming_s = run_moaa(streaming, directory / "run-streaming")
        staged_s = run_moaa(staged, directory / "run-staged")
    print(f"prompts={args.prompts} max_new_tokens={args.max_new_tokens}")
    print(f"sequential script: {baseline_s:7.1f} s")
    print(f"moaa streaming:    {streaming_s:7.1f} s  ratio {baseline_s / streaming_s:.2f}x")
    print(f"moaa staged:       {staged_s:7.1f} s  ratio {baseline_s / staged_s:.2f}x")


if __name__ == "__main__":
    main()
