"""Orchestration: how close the streaming graph comes to its ideal, on engines that take no CPU.

Every model is the ``simulated`` engine: a call sleeps ``latency_s + latency_per_token_s * tokens``
and uses no CPU, as a GPU replica looks from the driver; the latency model is written into the
figures. What is timed is the real stage code (the stage's ``load``, ``batches`` and ``write`` with its
pools), from the pools being up to the last row written. As on a cluster, the stage starts its
stream while its models load; the MoA and preference models take 6 s to load (``load_s``, no CPU;
a GPU model takes tens of seconds), and whatever of Ray Data's start-up that does not hide shows in
``moa_first_batch_s``.

- ``moa_wall_over_ideal``: MoA generate (3 proposers, then an aggregator) wall time / the ideal: the
  busiest pool's busy time (measured by its replicas) plus one batch through every other layer
  (fill and drain).
- ``moa_after_first_batch_over_ideal`` (and ``preferences_``): the same after the first batch is
  out, against the ideal after it: the pipeline once started (``moa_first_batch_s``: the first
  batch out, from the models being up).
- ``moa_speedup_vs_sequential``: a loop that calls the same engines layer by layer and model by
  model, with our batches, / our wall time; ``moa_pools`` is its ceiling.
- ``replica_scaling_R``: steady-state rows/s (first batch out to last) with R replicas per pool /
  (R x the rows/s with 1).
- ``preferences_wall_over_ideal``: the same as MoA for sampling, criteria, 3 judges in both orders
  and the aggregator judge.
- ``driver_rows_per_s``: steady-state rows/s through one layer of 3 zero-latency proposers.
- ``driver_peak_rss_mb``: the peak RSS of a ``moaa generate`` driver over ``driver_rss_prompts``
  prompts with zero-latency engines (in its own process and cluster).
- ``stage_startup_s``: the demo's generate (tiny transformers models) until its first batch is out,
  split into the cluster, the pools (the stream starts meanwhile) and the first batch after them
  (its compute included).

Run as ``.venv/bin/python benchmarks/run.py [--quick] --only orchestration``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from moaa_ray.config import MoaaConfig, load_config
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.stages.cluster import connect
from moaa_ray.stages.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
PROPOSERS, AGGREGATOR = ["proposer-a", "proposer-b", "proposer-c"], "aggregator"
POLICY, SELECTOR, JUDGES, JUDGE_AGGREGATOR = (
    "policy",
    "selector",
    ["judge-a", "judge-b"],
    "judge-agg",
)
BATCH = 16  # rows per stream batch and per engine call
ANSWER_TOKENS = 64
# A call of up to 16 rows: 0.1 s + 4 ms per generated token, ~0.36 s for 64 tokens.
LATENCY = {"latency_s": 0.1, "latency_per_token_s": 0.004, "answer_tokens": ANSWER_TOKENS}
# Where a stage is timed whole, its models load for 6 s without CPU: a GPU model takes tens of
# seconds, which the stream's own start-up overlaps.
LOADING = {**LATENCY, "load_s": 6.0}
SIZES = {  # quick, full
    "moa_prompts": (1000, 5000),
    "sequential_prompts": (64, 2000),
    "scaling_prompts": (480, 1000),  # per replica: 30 batches through each in quick
    "preference_prompts": (48, 400),
    "driver_prompts": (4000, 20000),
    "rss_prompts": (3000, 100000),
}


def simulated_models(names: list[str], replicas: int, latency: dict) -> dict:
    model = {"engine": "simulated", "num_cpus": 0, "max_batch_size": BATCH}
    return {
        n: {**model, "path": n, "simulated": latency, "num_replicas": [replicas, replicas]}
        for n in names
    }


def write_prompts(directory: Path, count: int) -> str:
    path = directory / f"prompts-{count}.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(count)))
    return str(path)


def generate_config(
    directory: Path, prompts: int, replicas: int = 1, latency: dict = LATENCY
) -> MoaaConfig:
    return MoaaConfig.model_validate(
        {
            "models": simulated_models([*PROPOSERS, AGGREGATOR], replicas, latency),
            "generate": {
                "inputs": [{"path": write_prompts(directory, prompts)}],
                "proposers": PROPOSERS,
                "aggregator": AGGREGATOR,
                "sampling": {"max_new_tokens": ANSWER_TOKENS},
                "batch_size": BATCH,
            },
        }
    )


def preferences_config(directory: Path, prompts: int) -> MoaaConfig:
    names = [POLICY, SELECTOR, *JUDGES, JUDGE_AGGREGATOR]
    return MoaaConfig.model_validate(
        {
            "models": simulated_models(names, 1, LOADING),
            "preferences": {
                "inputs": [{"path": write_prompts(directory, prompts)}],
                "policy": POLICY,
                "num_samples": 4,
                "sampling": {"max_new_tokens": ANSWER_TOKENS},
                "judging": {
                    "judges": JUDGES,
                    "aggregator_judge": JUDGE_AGGREGATOR,
                    "criteria_selector": SELECTOR,
                    "sampling": {"max_new_tokens": ANSWER_TOKENS},
                },
                # Every batch of 4 prompts is one sampling call, and 48 conversations per judge.
                "batch_size": 4,
            },
        }
    )


class TimedPoolSet(PoolSet):
    """A stage's pools that note when the stage's wait for them returned (the models are up)."""

    up_at: float | None = None

    def wait(self) -> None:
        super().wait()
        self.up_at = self.up_at or time.monotonic()


def time_stage(stage: Any, config: MoaaConfig) -> dict:
    """Run a row stage's own load/batches/write as the stage runs them: its stream starts while its
    pools load. Times count from the pools being up; ``load_s`` is from launch to then."""
    states, _ = stage.load()
    with TimedPoolSet(config.models) as pools:
        launched = time.monotonic()
        finished: list[tuple[float, int]] = []
        for batch in stage.batches(states, pools):
            stage.write(batch)
            finished.append((time.monotonic(), len(batch)))
        busy = {
            name: sum(s["busy_s"] for s in ray.get([a.stats.remote() for a in pool.actors]))
            for name, pool in pools.pools.items()
        }
    assert pools.up_at is not None
    first, last = finished[0][0] - pools.up_at, finished[-1][0] - pools.up_at
    steady_rows = sum(n for _, n in finished[1:])
    return {
        "wall_s": last,
        "first_batch_s": first,
        "load_s": pools.up_at - launched,
        "rows": sum(n for _, n in finished),
        "steady_rows_per_s": steady_rows / max(last - first, 1e-9),
        "busy_s": busy,
    }


def ideal_seconds(busy: dict[str, float], steps: list[list[str]], batches: int) -> float:
    """The busiest pool's busy time (one replica) plus one batch through every other step."""
    busiest = max(busy, key=lambda name: busy[name])
    others = [max(busy[name] for name in step) / batches for step in steps if busiest not in step]
    return busy[busiest] + sum(others)


def ideal_first_batch_seconds(
    busy: dict[str, float], steps: list[list[str]], batches: int
) -> float:
    """One batch through every step: the ideal time until the first batch is out."""
    return sum(max(busy[name] for name in step) / batches for step in steps)


def steady_over_ideal(timing: dict, steps: list[list[str]], batches: int) -> float:
    """Wall time after the first batch / the ideal time after it: the pipeline once started,
    without the fixed start-up (Ray Data's operators and their actors) that ``*_wall_over_ideal``
    includes."""
    busy = timing["busy_s"]
    ideal = ideal_seconds(busy, steps, batches) - ideal_first_batch_seconds(busy, steps, batches)
    return (timing["wall_s"] - timing["first_batch_s"]) / ideal


def sequential_moa(config: MoaaConfig) -> float:
    """A plain loop over the same engines, in-process: per batch, each layer, each model in turn."""
    from moaa_ray.core.moa import layer_requests, plan_layers, record_output
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.engines.simulated import SimulatedEngine
    from moaa_ray.pipeline.inputs import load_states

    gen = config.generate
    assert gen is not None
    engines = {name: SimulatedEngine(config.models[name]) for name in config.models}
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    params = SamplingParams(max_new_tokens=gen.sampling.max_new_tokens)
    states, _ = load_states(gen.inputs)
    started = time.monotonic()
    for i in range(0, len(states), gen.batch_size):
        batch = states[i : i + gen.batch_size]
        for layer in range(len(plan.layers)):
            calls: dict[tuple[int, str], list] = {}
            for state in batch:
                for slot, model, prompt in layer_requests(
                    state, plan, 0, layer, gen.aggregate_template
                ):
                    calls.setdefault((slot, model), []).append((state, prompt.messages()))
            for (slot, model), items in calls.items():
                answers = engines[model].chat([c for _, c in items], params)
                for (state, _), answer in zip(items, answers, strict=True):
                    record_output(state, 0, layer, slot, model, answer[0].text, None)
    return time.monotonic() - started


def measure_moa(directory: Path, quick: bool) -> dict:
    from moaa_ray.pipeline.generate import GenerateStage

    def run(prompts: int, replicas: int, name: str, latency: dict) -> tuple[MoaaConfig, dict]:
        config = generate_config(directory, prompts, replicas, latency)
        assert config.generate is not None
        stage = GenerateStage(config, config.generate, RunDir(directory / name))
        return config, time_stage(stage, config)

    prompts = SIZES["moa_prompts"][not quick]
    config, moa = run(prompts, 1, "moa", LOADING)
    batches = math.ceil(prompts / BATCH)
    ideal = ideal_seconds(moa["busy_s"], [PROPOSERS, [AGGREGATOR]], batches)
    seq_prompts = SIZES["sequential_prompts"][not quick]
    sequential_s = sequential_moa(generate_config(directory, seq_prompts)) * prompts / seq_prompts
    figures = {
        "moa_prompts": prompts,
        "moa_wall_s": round(moa["wall_s"], 2),
        "moa_ideal_s": round(ideal, 2),
        "moa_wall_over_ideal": round(moa["wall_s"] / ideal, 3),
        "moa_load_s": round(moa["load_s"], 2),
        "moa_first_batch_s": round(moa["first_batch_s"], 2),
        "moa_after_first_batch_over_ideal": round(
            steady_over_ideal(moa, [PROPOSERS, [AGGREGATOR]], batches), 3
        ),
        "moa_pool_utilization": round(max(moa["busy_s"].values()) / moa["wall_s"], 3),
        "sequential_prompts": seq_prompts,
        "sequential_s_scaled": round(sequential_s, 2),
        "moa_speedup_vs_sequential": round(sequential_s / moa["wall_s"], 2),
        "moa_pools": len(config.models),
        "moa_speedup_over_pools": round(sequential_s / moa["wall_s"] / len(config.models), 3),
    }
    base = None
    for replicas in (1, 2, 4):
        scaled_prompts = SIZES["scaling_prompts"][not quick] * replicas
        _, scaled = run(scaled_prompts, replicas, f"r{replicas}", LATENCY)
        base = base or scaled["steady_rows_per_s"]
        figures[f"rows_per_s_{replicas}_replicas"] = round(scaled["steady_rows_per_s"], 1)
        figures[f"replica_scaling_{replicas}"] = round(
            scaled["steady_rows_per_s"] / (replicas * base), 3
        )
    return figures


def measure_preferences(directory: Path, quick: bool) -> dict:
    from moaa_ray.pipeline.preferences import PreferenceStage

    prompts = SIZES["preference_prompts"][not quick]
    config = preferences_config(directory, prompts)
    assert config.preferences is not None
    stage = PreferenceStage(
        config, config.preferences, RunDir(directory / "prefs"), "prefs", (0, 1)
    )
    timing = time_stage(stage, config)
    steps = [[POLICY], [SELECTOR], JUDGES, [JUDGE_AGGREGATOR]]
    batches = math.ceil(prompts / config.preferences.batch_size)
    ideal = ideal_seconds(timing["busy_s"], steps, batches)
    return {
        "preference_prompts": prompts,
        "preferences_wall_s": round(timing["wall_s"], 2),
        "preferences_ideal_s": round(ideal, 2),
        "preferences_wall_over_ideal": round(timing["wall_s"] / ideal, 3),
        "preferences_load_s": round(timing["load_s"], 2),
        "preferences_first_batch_s": round(timing["first_batch_s"], 2),
        "preferences_after_first_batch_over_ideal": round(
            steady_over_ideal(timing, steps, batches), 3
        ),
    }


def measure_driver(directory: Path, quick: bool) -> dict:
    """Rows/s through one layer of zero-latency proposers: the ceiling of the orchestration."""
    from moaa_ray.core.moa import plan_layers
    from moaa_ray.pipeline.inputs import load_states
    from moaa_ray.pipeline.moa_graph import Step, stream

    config = generate_config(directory, SIZES["driver_prompts"][not quick], latency={})
    gen = config.generate
    assert gen is not None
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    states, _ = load_states(gen.inputs)
    with PoolSet(config.models) as pools:
        first, rows = None, 0
        for batch in stream(states, [Step(0, 0)], plan, pools.start(PROPOSERS), gen):
            if first is None:
                first = time.monotonic()  # steady state: from the first batch out
            else:
                rows += len(batch)
        assert first is not None
        elapsed = time.monotonic() - first
    return {"driver_prompts": len(states), "driver_rows_per_s": round(rows / elapsed)}


def run_child(*args: str) -> dict:
    """Run this module in a fresh process (own driver, own cluster); its last line is JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_rss(prompts: int) -> dict:
    """``moaa generate`` over zero-latency engines in this process; its peak RSS."""
    from moaa_ray.pipeline.generate import generate_sft

    with tempfile.TemporaryDirectory() as tmp:
        config = generate_config(Path(tmp), prompts, latency={})
        summary = generate_sft(config, Path(tmp) / "run")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "driver_rss_prompts": prompts,
        "driver_rss_rows_written": summary["rows_written"],
        "driver_peak_rss_mb": round(peak_mb),
    }


def child_startup() -> dict:
    """The demo's generate: cluster, pools, and its first batch out."""
    from moaa_ray.pipeline.generate import GenerateStage

    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.generate is not None
    started = time.monotonic()
    connect(config)
    cluster_s = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        stage = GenerateStage(config, config.generate, RunDir(tmp))
        states, _ = stage.load()
        with TimedPoolSet(config.models) as pools:
            next(iter(stage.batches(states, pools)))
            first_at = time.monotonic()
            assert pools.up_at is not None
    pools_s = pools.up_at - started - cluster_s
    first_s = first_at - pools.up_at
    return {
        "stage_startup_s": round(cluster_s + pools_s + first_s, 2),
        "startup_cluster_s": round(cluster_s, 2),
        "startup_pools_s": round(pools_s, 2),
        "startup_first_batch_s": round(first_s, 2),
    }


def measure(quick: bool) -> dict:
    """Every orchestration figure; starts (and shuts down) a local Ray cluster."""
    figures = {
        "latency_model": (
            f"simulated engine: {LATENCY['latency_s']} s + {LATENCY['latency_per_token_s']} s/token"
            f" x {ANSWER_TOKENS} tokens per call of up to {BATCH} rows; 1 replica per pool unless"
            f" stated; MoA and preference models load in {LOADING['load_s']} s"
        ),
    }
    figures |= run_child("--child", "startup")
    figures |= run_child("--child", "rss", str(SIZES["rss_prompts"][not quick]))
    with tempfile.TemporaryDirectory() as tmp:
        connect(MoaaConfig.model_validate({"models": {}}))
        try:
            figures |= measure_moa(Path(tmp), quick)
            figures |= measure_preferences(Path(tmp), quick)
            figures |= measure_driver(Path(tmp), quick)
        finally:
            ray.shutdown()
    return figures


def plot(figures: dict, path: Path) -> None:
    """Ratios against their goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = {
        "MoA wall / ideal": (figures["moa_wall_over_ideal"], 1.10),
        "prefs wall / ideal": (figures["preferences_wall_over_ideal"], 1.15),
        "MoA speedup / pools": (figures["moa_speedup_over_pools"], 0.9),
        **{f"scaling, {r} replicas": (figures[f"replica_scaling_{r}"], 0.9) for r in (2, 4)},
    }
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(ratios)
    ax.bar(names, [v for v, _ in ratios.values()], color="tab:blue", label="measured")
    ax.scatter(names, [g for _, g in ratios.values()], color="tab:red", marker="_", s=600,
               label="goal", zorder=3)  # fmt: skip
    ax.set_ylabel("ratio")
    ax.set_title("Orchestration on simulated engines")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    """A child process of :func:`measure` (``--child startup`` or ``--child rss N``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs="+", required=True)
    kind, *rest = parser.parse_args().child
    print(json.dumps(child_startup() if kind == "startup" else child_rss(int(rest[0]))))


if __name__ == "__main__":
    main()
