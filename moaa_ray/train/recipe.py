"""The pure parts of a training run: which rows make each optimizer step, how one step splits into
micro-batches per worker, the learning-rate schedule, and the one place that builds a DeepSpeed config.

Plain Python over ints and lists (no torch, no ray), so every worker derives the same plan from the same
inputs and a resumed run continues on exactly the rows it would have seen.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal


class TooFewRows(ValueError):
    """The training data holds fewer rows than one optimizer step takes."""


def plan_batches(
    num_rows: int, global_batch_size: int, num_epochs: int, seed: int, max_steps: int | None = None
) -> list[list[int]]:
    """Row indices of every optimizer step.

    Each epoch is a fresh seeded shuffle cut into full global batches; an epoch's incomplete last batch
    is dropped, so every step has exactly ``global_batch_size`` rows.

    Args:
        num_rows: rows in the dataset.
        global_batch_size: rows per optimizer step, over all workers.
        num_epochs: passes over the data.
        seed: shuffle seed.
        max_steps: stop after this many steps (None: all epochs).

    Returns:
        One list of row indices per step.

    Raises:
        TooFewRows: fewer rows than one global batch.
    """
    if num_rows < global_batch_size:
        raise TooFewRows(
            f"{num_rows} rows is fewer than global_batch_size={global_batch_size}: nothing to train on"
        )
    steps: list[list[int]] = []
    for epoch in range(num_epochs):
        order = list(range(num_rows))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        last_start = num_rows - global_batch_size
        steps += [
            order[i : i + global_batch_size] for i in range(0, last_start + 1, global_batch_size)
        ]
    return steps if max_steps is None else steps[:max_steps]


def accumulation_steps(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per worker and step so that ``world_size`` workers cover one global batch.

    With an elastic worker count the global batch need not divide evenly: micro-batches then hold
    fewer rows than ``micro_batch_size``, but never none.

    Raises:
        ValueError: some worker would get an empty micro-batch.
    """
    steps = math.ceil(global_batch_size / (micro_batch_size * world_size))
    if steps * world_size > global_batch_size:
        raise ValueError(
            f"global_batch_size={global_batch_size} cannot give each of {world_size} workers "
            f"{steps} non-empty micro-batches; raise it or lower the worker count"
        )
    return steps


def split_step(
    rows: list[int], lengths: list[int], world_size: int, num_micro_batches: int
) -> list[list[list[int]]]:
    """Deal one step's rows into ``num_micro_batches`` micro-batches per worker, grouped by length.

    Rows are sorted by length and cut into ``world_size * num_micro_batches`` contiguous buckets whose
    sizes differ by at most one; bucket ``k`` is micro-batch ``k // world_size`` of worker
    ``k % world_size``. Rows of similar length share a micro-batch (little padding), and at every
    micro-step the workers, which synchronize there, hold similar lengths (similar compute).

    Args:
        rows: the step's row indices.
        lengths: a length (e.g. characters) for every row of the dataset, indexed by row.
        world_size: workers.
        num_micro_batches: micro-batches per worker (see :func:`accumulation_steps`).

    Returns:
        ``result[worker][micro_batch]`` = row indices.
    """
    order = sorted(rows, key=lambda i: (-lengths[i], i))
    num_buckets = world_size * num_micro_batches
    base, extra = divmod(len(order), num_buckets)
    buckets, start = [], 0
    for k in range(num_buckets):
        size = base + (k < extra)
        buckets.append(order[start : start + size])
        start += size
    return [
        [buckets[m * world_size + w] for m in range(num_micro_batches)] for w in range(world_size)
    ]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    schedule: Literal["cosine", "linear", "constant"],
) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup from 0 over ``warmup_steps``, then cosine or linear decay to 0 at ``total_steps``,
    or constant; the same curves as transformers' ``get_*_schedule_with_warmup``.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown lr schedule {schedule!r}")


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length in optimizer steps for a fraction of the run."""
    return math.ceil(total_steps * warmup_ratio)


def effective_zero_stage(zero_stage: int, num_workers: list[int], offload: bool) -> int:
    """The ZeRO stage to train with: 0 for the default ZeRO-2 where there is nothing to shard.

    ZeRO-2 partitions optimizer state and gradients over the data-parallel workers; on a fixed
    single worker without offload it partitions nothing and only adds flat fp32 copies and bucket
    copies per micro-batch (a fifth of the step time of a 19M-parameter model on CPU, see
    ``benchmarks/bench_training.py``). Only a fixed worker count of 1 qualifies: an elastic run may
    resume on more workers, and its checkpoints keep the configured layout. ZeRO-3 (never the
    default) is kept as configured, e.g. to try on one worker the layout a larger run will use.
    """
    if zero_stage == 2 and not offload and list(num_workers) == [1, 1]:
        return 0
    return zero_stage


def build_deepspeed_config(
    *,
    zero_stage: int,
    offload: bool,
    micro_batch_size: int,
    num_micro_batches: int,
    world_size: int,
    max_grad_norm: float,
    gpu: bool,
) -> dict[str, Any]:
    """The DeepSpeed config of every training run (the only place one is built).

    The optimizer and LR schedule are client objects (torch AdamW or RMSprop, and a lambda
    schedule), so no DeepSpeed op is JIT-built; ``zero_allow_untested_optimizer`` lets ZeRO wrap
    them, and with ``offload`` the optimizer steps run on CPU with the torch optimizer instead of
    DeepSpeedCPUAdam.

    Args:
        zero_stage: 0 (plain data parallel), 2 (optimizer state + gradients sharded) or 3 (+ params).
        offload: keep optimizer state (and, with ZeRO-3, params) in CPU memory.
        micro_batch_size: rows per micro-batch and worker.
        num_micro_batches: gradient accumulation steps.
        world_size: workers.
        max_grad_norm: gradient clipping norm (0 = off).
        gpu: workers have a GPU: train in bfloat16 with fp32 master weights, pin offloaded memory.

    Returns:
        A config dict for ``deepspeed.initialize(config=...)``.
    """
    if zero_stage not in (0, 2, 3):
        raise ValueError(f"zero_stage must be 0, 2 or 3, got {zero_stage}")
    if offload and zero_stage == 0:
        raise ValueError("offload needs zero_stage 2 or 3")
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage == 2:
        zero.update(contiguous_gradients=True, overlap_comm=False)
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": gpu}
        if zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": gpu}
    return {
        "train_batch_size": micro_batch_size * num_micro_batches * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": num_micro_batches,
        "gradient_clipping": max_grad_norm,
        "bf16": {"enabled": gpu},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,  # metrics go to TensorBoard and the progress file instead
        "wall_clock_breakdown": False,
    }
