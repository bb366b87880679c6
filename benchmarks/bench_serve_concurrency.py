"""Serving concurrency: 8 requests at once vs one request, on ``moaa serve``'s app.

One replica of the hf engine on the tiny model ``tiny:llama-a`` behind Ray Serve on 127.0.0.1, called
with the openai client. Every request is the same greedy request (same prompt, same ``max_tokens``), so
each generates the same tokens. The server batches requests that arrive together, so 8 at once should
take about as long as one: the goal is at most 2x. 8 one after another are measured too, for scale.

The replica is measured as ``moaa serve`` deploys it by default (1 CPU, so torch computes with one
thread), and in the full run also holding every core (``--num-cpus N``, N threads). For reference,
the engine alone (no server) gives the floor: ``chat`` on 8 conversations over ``chat`` on one, with
one thread.
Each figure is the median of several runs, single and batched in turn, on a warm server.

Run as ``.venv/bin/python benchmarks/run.py [--quick] --only serve_concurrency``.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from openai import OpenAI
from ray import serve

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.serve.openai_app import ServeSettings, run_server

MODEL, NAME = "tiny:llama-a", "tiny"
CONCURRENT, MAX_TOKENS, REPEATS, GOAL = 8, 128, 3, 2.0
CPUS = os.cpu_count() or 1
MESSAGES = [{"role": "user", "content": "Tell me about the sky."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(call) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def interleaved_medians(single, batch) -> tuple[float, float]:
    """Median times of two calls, run in turn so that other load on the machine affects both alike."""
    pairs = [(timed(single), timed(batch)) for _ in range(REPEATS)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def measure_server(config: ModelConfig, port: int) -> dict:
    """Serve ``config`` and time one request, 8 at once and 8 in turn, all identical and greedy."""
    url = run_server(config, ServeSettings(NAME), port=port)
    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)

    def ask():
        return client.chat.completions.create(
            model=NAME, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
        )

    with ThreadPoolExecutor(CONCURRENT) as pool:

        def burst() -> list:
            return list(pool.map(lambda _: ask(), range(CONCURRENT)))

        reference = ask()
        answers = burst()  # warm: the first batch, and the pool's threads
        assert all(
            a.choices[0].message.content == reference.choices[0].message.content for a in answers
        )
        one, eight = interleaved_medians(ask, burst)
    sequential = timed(lambda: [ask() for _ in range(CONCURRENT)])
    assert reference.usage.completion_tokens == MAX_TOKENS, "the answer stopped early"
    return {"one": one, "eight": eight, "sequential": sequential}


def measure_engine_alone() -> float:
    """``chat`` on 8 copies of the conversation over ``chat`` on one, one torch thread, no server."""
    import torch

    from moaa_ray.engines.hf import HFEngine

    torch.set_num_threads(1)
    engine = HFEngine(ModelConfig(path=MODEL))
    params = SamplingParams(temperature=0.0, max_new_tokens=MAX_TOKENS)
    engine.chat([MESSAGES] * CONCURRENT, params)  # warm
    one, eight = interleaved_medians(
        lambda: engine.chat([MESSAGES], params),
        lambda: engine.chat([MESSAGES] * CONCURRENT, params),
    )
    return eight / one


def measure(quick: bool) -> dict:
    """Every figure; starts (and shuts down) a local Ray cluster. ``quick``: no ``all_cores_*``."""
    load = os.getloadavg()[0]  # other work on the machine skews the figures; recorded with them
    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    port = free_port()
    default = measure_server(ModelConfig(path=MODEL), port)
    all_cores = None if quick else measure_server(ModelConfig(path=MODEL, num_cpus=CPUS), port)
    serve.shutdown()
    ray.shutdown()
    floor = measure_engine_alone()
    figures = {
        "one_request_s": round(default["one"], 3),
        "eight_concurrent_s": round(default["eight"], 3),
        "concurrent_over_single": round(default["eight"] / default["one"], 2),
        "goal": GOAL,
        "eight_sequential_s": round(default["sequential"], 3),
        "sequential_over_single": round(default["sequential"] / default["one"], 2),
        "engine_alone_eight_over_one_1_thread": round(floor, 2),
        "max_tokens": MAX_TOKENS,
        "repeats": REPEATS,
        "cpus": CPUS,
        "load_average_1m_at_start": round(load, 2),
        "setup": (
            f"moaa serve's app, one hf replica of {MODEL}, openai client on 127.0.0.1, a "
            f"{CPUS}-core machine; {CONCURRENT} identical greedy requests of max_tokens="
            f"{MAX_TOKENS} sent at once vs one, medians of {REPEATS} alternating runs on a warm "
            "server; the replica as deployed by default (1 CPU, one torch thread), then (full run "
            f"only) all_cores (--num-cpus {CPUS}); engine_alone is HFEngine.chat without a server"
        ),
    }
    if all_cores is not None:
        figures |= {
            "all_cores_one_request_s": round(all_cores["one"], 3),
            "all_cores_eight_concurrent_s": round(all_cores["eight"], 3),
            "all_cores_concurrent_over_single": round(all_cores["eight"] / all_cores["one"], 2),
        }
    return figures


def plot(figures: dict, path: Path) -> None:
    """Seconds for one request, 8 at once and 8 in turn, per replica size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = ["one request", f"{CONCURRENT} at once", f"{CONCURRENT} in turn"]
    default = [figures[k] for k in ("one_request_s", "eight_concurrent_s", "eight_sequential_s")]
    ax.bar(labels, default, color="tab:blue")
    ax.set_ylabel("seconds")
    ax.set_title(
        f"moaa serve, 1-CPU replica: {CONCURRENT} at once = "
        f"{figures['concurrent_over_single']}x one (goal <= {GOAL})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
