"""Model pools: moaa_ray's own engine actors vs a Ray Serve deployment of the same engine.

Both sides hold 2 replicas of the ``simulated`` engine with zero latency, so the figures are pure
orchestration: start-up until the first call can be made, the round trip of one single-item call,
and the throughput of 400 single-item calls submitted at once.

Run as ``.venv/bin/python benchmarks/run.py --only pool_vs_serve``.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import ray
from ray import serve

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.factory import build_engine
from moaa_ray.pools.pool_set import start_pool, stop_actors

CONFIG = ModelConfig(path="sim", engine="simulated", num_replicas=[2, 2], num_cpus=0)
CONVERSATION = [{"role": "user", "content": "hi"}]
PARAMS = SamplingParams(max_new_tokens=8)
ROUND_TRIPS, BURST = 200, 400


@serve.deployment(num_replicas=2, max_ongoing_requests=16, ray_actor_options={"num_cpus": 0})
class EngineDeployment:
    """The same engine behind a Serve deployment (router, health checks, backpressure)."""

    def __init__(self, config: ModelConfig):
        self.engine = build_engine(config)

    def chat(self, conversations: list, params: SamplingParams) -> list:
        return self.engine.chat(conversations, params)


def measure_pool() -> dict:
    started = time.perf_counter()
    pool = start_pool("sim", CONFIG)
    startup = time.perf_counter() - started
    trips = []
    for _ in range(ROUND_TRIPS):
        begin = time.perf_counter()
        pool.chat([CONVERSATION], PARAMS)
        trips.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    calls = [pool.submit("chat", [CONVERSATION], PARAMS) for _ in range(BURST)]
    for call in calls:
        pool.collect(call)
    burst = time.perf_counter() - begin
    stop_actors(pool.actors)
    return _figures(startup, trips, burst)


def measure_serve() -> dict:
    started = time.perf_counter()
    handle = serve.run(EngineDeployment.bind(CONFIG), name="bench", route_prefix=None)
    startup = time.perf_counter() - started
    trips = []
    for _ in range(ROUND_TRIPS):
        begin = time.perf_counter()
        handle.chat.remote([CONVERSATION], PARAMS).result()
        trips.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    responses = [handle.chat.remote([CONVERSATION], PARAMS) for _ in range(BURST)]
    for response in responses:
        response.result()
    burst = time.perf_counter() - begin
    serve.shutdown()
    return _figures(startup, trips, burst)


def _figures(startup: float, trips: list[float], burst: float) -> dict:
    return {
        "startup_s": round(startup, 2),
        "call_ms_median": round(1000 * statistics.median(trips), 2),
        "burst_calls_per_s": round(BURST / burst, 1),
    }


def measure(quick: bool) -> dict:
    """Both sides in one local Ray cluster; ``quick`` changes nothing here (it takes ~30 s)."""
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    pool, deployment = measure_pool(), measure_serve()
    ray.shutdown()
    return {
        **{f"pool_{k}": v for k, v in pool.items()},
        **{f"serve_{k}": v for k, v in deployment.items()},
        "startup_ratio_serve_over_pool": round(deployment["startup_s"] / pool["startup_s"], 2),
        "call_ms_ratio_serve_over_pool": round(
            deployment["call_ms_median"] / pool["call_ms_median"], 2
        ),
        "burst_ratio_pool_over_serve": round(
            pool["burst_calls_per_s"] / deployment["burst_calls_per_s"], 2
        ),
        "cpus": os.cpu_count(),
    }


def plot(figures: dict, path: Path) -> None:
    """Pool and Serve side by side: start-up, one call's round trip, burst throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("startup_s", "start-up (s)"), ("call_ms_median", "one call (ms)"),
              ("burst_calls_per_s", f"{BURST} calls at once (calls/s)")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.bar(["pool", "Serve"], [figures[f"pool_{key}"], figures[f"serve_{key}"]],
               color=["tab:blue", "tab:gray"])  # fmt: skip
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
