"""Training throughput: our Ray Train + DeepSpeed SFT and DPO against single-process baselines.

Steady-state tokens per second on the same model, data, batch and CPU:

* SFT: ``train_sft`` (the ``moaa sft`` code path) against a plain torch loop: fused AdamW like
  ours (and TRL's default), the same rows and micro-batches in every step, the same masked
  next-token loss, one ``loss.item()`` per step.
* DPO: ``train_dpo`` (``moaa dpo``) against TRL's ``DPOTrainer``, both with a reference model that
  runs a forward pass every step (ours ``precompute_ref_logprobs=False``, TRL
  ``precompute_ref_log_probs=False``), sigmoid loss, the same beta, learning rate, batch and length.

Each runs on ``tiny:bench-512`` (19M parameters; a plain-loop step takes over a second) and on
``tiny:llama-a`` (0.5M; per-step overhead dominates). The data are seeded synthetic conversations
and preference pairs of 130-256 tokens per sequence. Ours runs the config's default,
``zero_stage: 2``, on one fixed worker, where ZeRO has nothing to shard across and DeepSpeed trains at
stage 0 (``moaa_ray.train.recipe.effective_zero_stage``; ZeRO-2's flattened fp32 copies of weights and
gradients cost a fifth of the step time of the 19M-parameter model, 0.73 vs 0.93 of the torch loop).

How it is timed:

* Tokens are a step's non-padding input tokens (DPO: chosen plus rejected sequences). Ours and the
  torch loop count them from the same tokenization of the same rows (``plan_batches``); TRL's are
  counted by a hook on its policy model's forward.
* Ours: the wall-clock time between the TensorBoard events that the rank-0 worker writes after each
  step, so everything between steps (progress file, logging) counts. The first step's own duration
  comes from its logged ``tokens_per_s``. Start-up is the time from the ``train_sft``/``train_dpo``
  call until the first step begins: Ray Train's workers, process group, model load, DeepSpeed.
* Baselines: ``time.perf_counter`` around each step (TRL: between its step callbacks). The torch
  loop tokenizes before it starts; ours tokenizes inside each step. TRL's start-up runs from
  building its trainer (models, tokenized data) to step 1, in this process, where the libraries
  are imported already.
* Steady state: the median of the steps' tokens/s after the first ``WARMUP_STEPS`` (the median, so
  a burst of load from another process on a shared machine moves it less).
* Same CPU: one Ray Train worker with ``cpus_per_worker`` = every core, for which Ray sets
  ``OMP_NUM_THREADS`` and so torch's thread count to that number; the baselines call
  ``torch.set_num_threads`` with it (``torch_threads``), and all run at niceness 0. Ours
  checkpoints only after the last step (``checkpoint_every_steps`` above the step count).

Run as ``.venv/bin/python benchmarks/run.py [--quick] --only training``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

WARMUP_STEPS = 2
THREADS = os.cpu_count() or 1
SEED = 0
MAX_SEQ_LEN = 256
LEARNING_RATE, BETA, MAX_GRAD_NORM = 1e-4, 0.1, 1.0

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Setup:
    """One model's comparison: the model, the steps and the batches every trainer gets."""

    model: str  # a tiny: name or a directory
    steps: tuple[int | None, int]  # per run (quick, full), warm-up included; None: full run only
    sft_batch: tuple[int, int] = (8, 4)  # rows per step, rows per forward
    dpo_batch: tuple[int, int] = (4, 2)  # pairs per step, pairs per forward
    gpu: bool = False  # one GPU, bf16 (ours: DeepSpeed bf16; baselines: autocast) instead of CPU
    # GPU baselines: PyTorch's default attention kernel, cuDNN's on Hopper, rather than the ones
    # our trainer uses (moaa_ray.train.worker turns cuDNN's off).
    cudnn_attention: bool = False


# Quick runs the bench model only: the tiny model's runs are mostly start-up.
SETUPS = {"bench": Setup("tiny:bench-512", (7, 32)), "tiny": Setup("tiny:llama-a", (None, 102))}


def make_conversations(count: int, seed: int) -> list[Messages]:
    """Seeded one-turn conversations: a 10-25 word question, a 35-75 word answer."""
    rng, words = random.Random(seed), _vocabulary()
    return [
        [
            {"role": "user", "content": _sentence(rng, words, 10, 25)},
            {"role": "assistant", "content": _sentence(rng, words, 35, 75)},
        ]
        for _ in range(count)
    ]


def make_pairs(count: int, seed: int) -> list[dict[str, Messages]]:
    """Seeded preference pairs in TRL's conversational format (prompt, chosen, rejected)."""
    rng, words = random.Random(seed), _vocabulary()
    return [
        {
            "prompt": [{"role": "user", "content": _sentence(rng, words, 10, 25)}],
            "chosen": [{"role": "assistant", "content": _sentence(rng, words, 35, 75)}],
            "rejected": [{"role": "assistant", "content": _sentence(rng, words, 35, 75)}],
        }
        for _ in range(count)
    ]


def _vocabulary() -> list[str]:
    text = resources.files("moaa_ray.data").joinpath("demo_conversations.jsonl").read_text()
    return sorted(set(re.findall(r"[A-Za-z]+", text)))


def _sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high))).capitalize() + "."


def steady_rate(tokens: list[int], seconds: list[float]) -> float:
    """Median tokens/s of the steps after the warm-up."""
    steady = zip(tokens[WARMUP_STEPS:], seconds[WARMUP_STEPS:], strict=True)
    return statistics.median(count / duration for count, duration in steady)


def run_ours(stage: str, setup: Setup, rows: list, steps: int) -> dict[str, float]:
    """Train with ``train_sft`` or ``train_dpo`` in a fresh run directory.

    Args:
        stage: ``sft`` (rows are conversations) or ``dpo`` (rows are preference pairs).
        setup: the model (the starting weights), batches and device.
        rows: the data set.
        steps: optimizer steps.

    Returns:
        ``tokens_per_s`` (steady state) and ``startup_s`` (call until the first step begins).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoTokenizer

    from moaa_ray.config import MoaaConfig
    from moaa_ray.tiny_models import resolve_model_path
    from moaa_ray.train.collate import encode_conversation, encode_preference
    from moaa_ray.train.dpo import train_dpo
    from moaa_ray.train.recipe import plan_batches
    from moaa_ray.train.sft import train_sft

    sft = stage == "sft"
    batch, micro = setup.sft_batch if sft else setup.dpo_batch
    section = {
        "model": "m",
        "learning_rate": LEARNING_RATE,
        "global_batch_size": batch,
        "micro_batch_size": micro,
        "max_steps": steps,
        "max_seq_len": MAX_SEQ_LEN,
        "lr_schedule": "constant",
        "warmup_ratio": 0.0,
        "max_grad_norm": MAX_GRAD_NORM,
        "num_workers": [1, 1],
        "cpus_per_worker": THREADS,
        "gpus_per_worker": int(setup.gpu),
        "checkpoint_every_steps": steps + 1,
        "max_failures": 0,  # a restarted run would mix two runs' timings
        "seed": SEED,
    }
    if not sft:
        section.update(beta=BETA, precompute_ref_logprobs=False)
    with tempfile.TemporaryDirectory() as run_dir:
        data = Path(run_dir) / ("generate" if sft else "preferences")
        data.mkdir()
        table = [{"row_id": str(i), "messages": r} for i, r in enumerate(rows)] if sft else rows
        pq.write_table(pa.Table.from_pylist(table), data / "part-00000.parquet")
        config = MoaaConfig.model_validate(
            {"run_dir": run_dir, "models": {"m": {"path": setup.model}}, stage: section}
        )
        called = time.time()
        (train_sft if sft else train_dpo)(config, run_dir)
        events = EventAccumulator(str(Path(run_dir) / stage / "tensorboard"))
        events.Reload()
        ends = [e.wall_time for e in events.Scalars(f"{stage}/step")]
        first_rate = events.Scalars(f"{stage}/tokens_per_s")[0].value
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(setup.model))
    if sft:
        lengths = [len(encode_conversation(tokenizer, r, MAX_SEQ_LEN).input_ids) for r in rows]
    else:
        lengths = [
            sum(
                len(e.input_ids) for e in encode_preference(tokenizer, **r, max_seq_len=MAX_SEQ_LEN)
            )
            for r in rows
        ]
    tokens = [sum(lengths[i] for i in step) for step in plan_batches(len(rows), batch, 1, SEED)]
    seconds = [tokens[0] / first_rate] + [b - a for a, b in pairwise(ends)]
    return {
        "tokens_per_s": steady_rate(tokens, seconds),
        "startup_s": ends[0] - seconds[0] - called,
    }


def run_torch_loop(setup: Setup, conversations: list[Messages], steps: int) -> dict[str, float]:
    """SFT as a plain single-process torch loop over the rows ours takes in each step.

    On a GPU, fp32 weights and AdamW under bf16 autocast: mixed precision as TRL trains it.

    Returns:
        ``tokens_per_s`` (steady state), ``step_ms`` (median steady-state step), ``parameters``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moaa_ray.tiny_models import resolve_model_path
    from moaa_ray.train.collate import collate, encode_conversation
    from moaa_ray.train.losses import IGNORE_INDEX
    from moaa_ray.train.recipe import plan_batches, split_step

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    torch.backends.cuda.enable_cudnn_sdp(setup.cudnn_attention)
    device = "cuda" if setup.gpu else "cpu"
    path = resolve_model_path(setup.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    network = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, fused=True)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=setup.gpu)
    examples = [encode_conversation(tokenizer, c, MAX_SEQ_LEN) for c in conversations]
    lengths = [len(e.input_ids) for e in examples]
    batch, micro = setup.sft_batch
    tokens, seconds = [], []
    for rows in plan_batches(len(examples), batch, 1, SEED, steps):
        started = time.perf_counter()
        batches = [
            collate([examples[i] for i in part], tokenizer.pad_token_id, packed=False)
            for part in split_step(rows, lengths, 1, batch // micro)[0]
        ]
        targets = sum(int((b.targets != IGNORE_INDEX).sum()) for b in batches)
        for micro_batch in (b.to(device) for b in batches):
            with autocast:
                logits = network(**micro_batch.inputs, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), micro_batch.targets.flatten(), reduction="sum"
            )
            (loss / targets).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad()
        loss.item()
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(b.num_tokens for b in batches))
    return {
        "tokens_per_s": steady_rate(tokens, seconds),
        "step_ms": 1000 * statistics.median(seconds[WARMUP_STEPS:]),
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def run_trl(setup: Setup, pairs: list[dict[str, Messages]], steps: int) -> dict[str, float]:
    """DPO with TRL's ``DPOTrainer``: no evaluation, no saving, no report.

    On a GPU, bf16 mixed precision; each step's end waits for the GPU, so the clock times the step.

    Returns:
        ``tokens_per_s`` (steady state) and ``startup_s`` (models, data, trainer until step 1).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from moaa_ray.tiny_models import resolve_model_path

    torch.set_num_threads(THREADS)
    torch.backends.cuda.enable_cudnn_sdp(setup.cudnn_attention)
    path = resolve_model_path(setup.model)
    batch, micro = setup.dpo_batch
    counted = [0]  # policy input tokens so far
    marks: list[tuple[float, int]] = []  # (time, tokens) when step 1 begins and each step ends

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not marks:
                marks.append((time.perf_counter(), counted[0]))

        def on_step_end(self, args, state, control, **kwargs):
            if setup.gpu:
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), counted[0]))

    def count(module: Any, args: tuple, kwargs: dict) -> None:
        counted[0] += int(kwargs["attention_mask"].sum())

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            args=DPOConfig(
                output_dir=output_dir,
                per_device_train_batch_size=micro,
                gradient_accumulation_steps=batch // micro,
                learning_rate=LEARNING_RATE,
                lr_scheduler_type="constant",
                max_grad_norm=MAX_GRAD_NORM,
                max_steps=steps,
                beta=BETA,
                max_length=MAX_SEQ_LEN,
                precompute_ref_log_probs=False,
                gradient_checkpointing=False,
                bf16=setup.gpu,
                use_cpu=not setup.gpu,
                eval_strategy="no",
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                seed=SEED,
            ),
            train_dataset=Dataset.from_list(pairs),
            processing_class=AutoTokenizer.from_pretrained(path),
            callbacks=[Clock()],
        )
        trainer.model.register_forward_pre_hook(count, with_kwargs=True)
        trainer.train()
    times, totals = zip(*marks, strict=True)
    return {
        "tokens_per_s": steady_rate(
            [b - a for a, b in pairwise(totals)], [b - a for a, b in pairwise(times)]
        ),
        "startup_s": times[0] - started,
    }


def measure(quick: bool) -> dict[str, float | int | str]:
    """Run both comparisons on both models in a local Ray cluster of this machine's cores.

    Args:
        quick: fewer steps, the bench model only (about 2 minutes on 2 idle cores instead of
            about 8).

    Returns:
        Flat figures; ``bench_``/``tiny_`` prefixes name the model, and the two unprefixed ratios
        are the bench model's.
    """
    figures = compare(SETUPS, quick)
    figures["sft_tokens_per_s_ratio_vs_torch"] = figures["bench_sft_tokens_per_s_ratio_vs_torch"]
    figures["dpo_tokens_per_s_ratio_vs_trl"] = figures["bench_dpo_tokens_per_s_ratio_vs_trl"]
    return figures


def compare(setups: dict[str, Setup], quick: bool, gpus: int = 0) -> dict[str, float | int | str]:
    """Both comparisons for each setup, in a local Ray cluster of this machine's cores (and GPUs).

    Returns:
        Flat figures, each named with its setup's key as prefix.
    """
    import ray

    # Ray Train's placement-group cleaner asks the State API of the cluster that
    # <RAY_TMPDIR>/ray/ray_current_cluster names (the last `ray start` on this machine), not of its
    # own; when that is another live cluster, it finds no controller of ours and removes our
    # workers' placement group mid-run. A private temp dir keeps that file out of its reach.
    ray_dir = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-")
    # Ray starts its workers at niceness 15; the baselines run here at 0. The same priority keeps a
    # busy machine from slowing one side only.
    os.environ["RAY_worker_niceness"] = "0"
    figures: dict[str, float | int | str] = {"torch_threads": THREADS, "warmup_steps": WARMUP_STEPS}
    ray.init(
        address="local",
        num_cpus=THREADS,
        num_gpus=gpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    # The trainers' progress lines and TRL's logs go to stderr: stdout is for the figures.
    with contextlib.redirect_stdout(sys.stderr):
        for name, setup in setups.items():
            steps = setup.steps[0 if quick else 1]
            if steps is None:
                continue
            conversations = make_conversations(setup.sft_batch[0] * steps, SEED)
            pairs = make_pairs(setup.dpo_batch[0] * steps, SEED)
            sft = run_ours("sft", setup, conversations, steps)
            loop = run_torch_loop(setup, conversations, steps)
            dpo = run_ours("dpo", setup, pairs, steps)
            trl = run_trl(setup, pairs, steps)
            figures |= {
                f"{name}_model": setup.model,
                f"{name}_parameters": loop["parameters"],
                f"{name}_steps_measured": steps - WARMUP_STEPS,
                f"{name}_sft_rows_per_step": setup.sft_batch[0],
                f"{name}_dpo_pairs_per_step": setup.dpo_batch[0],
                f"{name}_torch_loop_step_ms": round(loop["step_ms"], 1),
                f"{name}_sft_tokens_per_s_ours": round(sft["tokens_per_s"]),
                f"{name}_sft_tokens_per_s_torch": round(loop["tokens_per_s"]),
                f"{name}_sft_tokens_per_s_ratio_vs_torch": round(
                    sft["tokens_per_s"] / loop["tokens_per_s"], 2
                ),
                f"{name}_dpo_tokens_per_s_ours": round(dpo["tokens_per_s"]),
                f"{name}_dpo_tokens_per_s_trl": round(trl["tokens_per_s"]),
                f"{name}_dpo_tokens_per_s_ratio_vs_trl": round(
                    dpo["tokens_per_s"] / trl["tokens_per_s"], 2
                ),
                f"{name}_sft_startup_s_ours": round(sft["startup_s"], 1),
                f"{name}_dpo_startup_s_ours": round(dpo["startup_s"], 1),
                f"{name}_dpo_startup_s_trl": round(trl["startup_s"], 1),
            }
    ray.shutdown()
    shutil.rmtree(ray_dir, ignore_errors=True)
    return figures


def plot(figures: dict, path: Path) -> None:
    """Bar charts of steady-state tokens/s, ours against the baseline, per comparison and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (key.removesuffix("_model"), stage, base)
        for key in figures
        if key.endswith("_model")  # one per setup that ran: the tiny model's in the full run only
        for stage, base in (("sft", "torch"), ("dpo", "trl"))
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.5))
    for ax, (size, stage, base) in zip(axes, panels, strict=True):
        key = f"{size}_{stage}_tokens_per_s_"
        names = ["ours", base]
        colors = ["C7" if name == base else "C0" for name in names]
        ax.bar(
            [n.replace("_", " ") for n in names], [figures[key + n] for n in names], color=colors
        )
        ratio = figures[f"{key}ratio_vs_{base}"]
        model = Path(figures[f"{size}_model"]).name
        ax.set_title(f"{stage.upper()}, {model}\nratio {ratio}", fontsize=9)
    axes[0].set_ylabel("tokens/s (steady state)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
