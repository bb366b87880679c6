"""What runs inside each Ray Train worker: the DeepSpeed engine, the step loop, metrics, resume.

Own loop rather than TRL's SFTTrainer/DPOTrainer inside the workers: TRL runs on transformers' Trainer
and accelerate, which then own the DeepSpeed config, the checkpoint layout and the resume logic; tying
those to Ray Train's ``report``/``get_checkpoint``, to elastic worker counts and to DeepSpeed on CPU
(gloo, client optimizer, no op builds) needed more glue than this loop, and hid the loss math. Here one
function reads as the run's steps (plan, engine, resume, train, save), the loss math is pure
(:mod:`moaa_ray.train.losses`), and SFT and DPO differ only in their :class:`Objective`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from moaa_ray.config import DPOConfig, SFTConfig
from moaa_ray.console import write_json_atomically
from moaa_ray.stages.rundir import StageDir
from moaa_ray.tiny_models import resolve_model_path
from moaa_ray.train.checkpoints import restore_checkpoint, save_checkpoint, save_hf_model
from moaa_ray.train.recipe import (
    TooFewRows,
    accumulation_steps,
    build_deepspeed_config,
    effective_zero_stage,
    lr_factor,
    plan_batches,
    split_step,
    warmup_steps,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, resolved by the driver (configs stop at the job boundary)."""

    stage: str  # "sft" or "dpo"
    train: SFTConfig | DPOConfig
    model_path: str  # local directory or hub name of the starting weights
    trust_remote_code: bool
    data_path: str  # directory of part-*.parquet shards
    output_dir: str  # the final HF model
    log_dir: str  # TensorBoard
    progress_file: (
        str  # rank 0 writes step, steps_total, loss, tokens_per_s here; the driver shows it
    )


class Objective(Protocol):
    """What differs between SFT and DPO; built per worker over the tokenizer and the rows."""

    lengths: list[int]  # a length per row, for grouping rows of similar length
    rows_dropped: int  # rows left out for having no trained token after cutting

    def make_batch(self, rows: list[int]) -> Any:
        """Tokenize and collate the given rows (on CPU)."""

    def counts(self, batch: Any) -> dict[str, float]:
        """Local normalizers of a batch (summed over workers before the loss); includes ``tokens``."""

    def loss(self, engine: Any, batch: Any, totals: dict[str, float]) -> tuple[torch.Tensor, dict]:
        """The batch's share of the step's loss (normalized by ``totals``) and of each metric."""

    def prepare(self, engine: Any, checkpoint_dir: str | None) -> None:
        """Work before the first step, with the starting weights still loaded."""

    def save(self, checkpoint_dir: str) -> None:
        """Add the objective's own state to a checkpoint (rank 0)."""


def read_training_rows(
    data_path: str, columns: list[str], optional: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """All rows of a stage's Parquet shards, in shard-name order (every worker gets the same list).

    ``optional`` columns are read from the shards that have them (a row of one that lacks them has
    no such key), so data written before a column existed reaches a check that names it.
    """
    import pyarrow.parquet as pq

    shards = StageDir(Path(data_path)).shards()
    if not shards:
        raise FileNotFoundError(f"no part-*.parquet shards in {data_path}")
    rows: list[dict[str, Any]] = []
    for shard in shards:
        names = set(pq.read_schema(shard).names)
        wanted = columns + [c for c in optional if c in names and c not in columns]
        rows += pq.read_table(shard, columns=wanted).to_pylist()
    return rows


def load_tokenizer(spec: WorkerSpec) -> Any:
    """The starting model's tokenizer (its chat template is the one trained on)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        spec.model_path, trust_remote_code=spec.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: WorkerSpec, gpu: bool, ds_config: dict | None = None) -> torch.nn.Module:
    """Load the starting weights; bf16 on GPU, fp32 on CPU.

    With a ZeRO-3 ``ds_config`` the weights are partitioned across workers while they load
    (transformers' ``HfDeepSpeedConfig`` turns on ``deepspeed.zero.Init``), so no worker holds the
    whole model.
    """
    from transformers import AutoModelForCausalLM

    zero3 = None
    if ds_config is not None and ds_config["zero_optimization"]["stage"] == 3:
        from transformers.integrations import HfDeepSpeedConfig

        zero3 = HfDeepSpeedConfig(ds_config)  # zero.Init is on while this object lives
    model = AutoModelForCausalLM.from_pretrained(
        spec.model_path,
        dtype=torch.bfloat16 if gpu else torch.float32,
        attn_implementation=spec.train.attn_implementation,
        trust_remote_code=spec.trust_remote_code,
    )
    del zero3
    return model


def build_optimizer(
    params: list[torch.nn.Parameter], name: str, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The client optimizer DeepSpeed wraps: torch AdamW (fused) or torch RMSprop.

    RMSprop keeps torch's defaults (alpha 0.99, eps 1e-8, no momentum), as transformers'
    ``optim="rmsprop"`` in SPPO's recipe does.
    """
    if name == "adamw":
        # Fused: one pass over the weights per step, not one per tensor op (on CPU ~7x faster).
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def build_deepspeed_engine(
    spec: WorkerSpec, total_steps: int, num_micro_batches: int, world_size: int
):
    """The DeepSpeed engine: model (+ LoRA), the client optimizer, the LR schedule, the ZeRO config."""
    import deepspeed

    cfg = spec.train
    gpu = ray.train.torch.get_device().type == "cuda"
    zero_stage = effective_zero_stage(cfg.zero_stage, cfg.num_workers, cfg.offload)
    if zero_stage != cfg.zero_stage:
        logger.info("one fixed worker, no offload: ZeRO-2 would shard nothing; training at stage 0")
    ds_config = build_deepspeed_config(
        zero_stage=zero_stage,
        offload=cfg.offload,
        micro_batch_size=cfg.micro_batch_size,
        num_micro_batches=num_micro_batches,
        world_size=world_size,
        max_grad_norm=cfg.max_grad_norm,
        gpu=gpu,
    )
    if gpu:
        # cuDNN's attention builds an execution plan for every new sequence length, milliseconds of
        # host time per layer and call; batches of varied lengths then wait on the host.
        torch.backends.cuda.enable_cudnn_sdp(False)
    else:
        # DeepSpeed's CPU comm backend JIT-builds a shared-memory all-reduce op when it starts
        # (~75 s on 2 cores, raced by every worker); gloo collectives are enough on CPU.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=dist.get_backend())  # wraps Ray Train's group
    model = load_causal_lm(spec, gpu, ds_config)
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.optimizer, cfg.learning_rate, cfg.weight_decay)
    warmup = warmup_steps(total_steps, cfg.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.lr_schedule)
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine


def all_reduce_sums(
    values: dict[str, float | torch.Tensor], device: torch.device
) -> dict[str, float]:
    """Sum each value over all workers (every worker passes the same keys).

    Values may be scalar tensors on ``device``: they are read back once, together, not one by one.
    """
    keys = sorted(values)
    tensor = torch.stack(
        [torch.as_tensor(values[k], dtype=torch.float64, device=device) for k in keys]
    )
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


def run_step(engine: Any, objective: Objective, micro_batches: list[list[int]]) -> dict[str, float]:
    """One optimizer step over this worker's micro-batches; returns the step's global metrics.

    Losses are normalized by global counts (e.g. all trained tokens of the step on all workers), so
    the gradient is exact however unevenly tokens fall into micro-batches. DeepSpeed averages
    gradients over workers, hence the factor ``world_size``; it must not divide by accumulation steps.
    """
    started = time.perf_counter()
    batches = [objective.make_batch(rows) for rows in micro_batches]
    local: Counter[str] = Counter()
    for batch in batches:
        local.update(objective.counts(batch))
    totals = all_reduce_sums(dict(local), engine.device)
    world_size = dist.get_world_size()
    # Metrics stay on the device until the step ends: reading one back waits for the GPU, which
    # would stop the host from queueing the next micro-batch's work while this one runs.
    sums: dict[str, float | torch.Tensor] = {}
    for batch in batches:
        loss, metrics = objective.loss(engine, batch, totals)
        engine.backward(loss * world_size, scale_wrt_gas=False)
        engine.step()
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
    result = all_reduce_sums(sums, engine.device)
    result["tokens_per_s"] = totals["tokens"] / (time.perf_counter() - started)
    grad_norm = engine.get_global_grad_norm()  # before clipping; None where DeepSpeed skips it
    if grad_norm is not None:
        result["grad_norm"] = float(grad_norm)
    return result


def train_worker(spec: WorkerSpec, make_objective) -> None:
    """The body of every Ray Train worker for SFT and DPO.

    Args:
        spec: what to train, on what, and where to write.
        make_objective: ``(spec, tokenizer) -> Objective`` (it reads its own rows).
    """
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    spec = replace(spec, model_path=resolve_model_path(spec.model_path))  # tiny models: per node
    cfg = spec.train
    torch.manual_seed(cfg.seed)
    # 1. Data and the step plan (the same on every worker, whatever the worker count).
    tokenizer = load_tokenizer(spec)
    objective = make_objective(spec, tokenizer)
    try:
        steps = plan_batches(
            len(objective.lengths), cfg.global_batch_size, cfg.num_epochs, cfg.seed, cfg.max_steps
        )
    except TooFewRows as exc:
        if not objective.rows_dropped:
            raise
        raise TooFewRows(f"{exc} ({objective.rows_dropped} more had no trainable token)") from exc
    num_micro = accumulation_steps(cfg.global_batch_size, cfg.micro_batch_size, world_size)
    # 2. The engine from the starting weights.
    engine = build_deepspeed_engine(spec, len(steps), num_micro, world_size)
    # 3. Objective set-up on the starting weights, then resume from the last checkpoint, if any.
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext(None) as checkpoint_dir:
        objective.prepare(engine, checkpoint_dir)
        zero_stage = effective_zero_stage(cfg.zero_stage, cfg.num_workers, cfg.offload)
        start = restore_checkpoint(engine, checkpoint_dir, world_size, zero_stage)
    logger.info("rank %d/%d: steps %d..%d of %d", rank, world_size, start, len(steps), len(steps))
    # 4. Train; log every step, checkpoint (and report to Ray Train) every N steps and at the end.
    # Not a report per step: Ray Train's result queue holds one report and its controller takes
    # one per poll (every 2 s), so a report per step would cap training at a step per 2 s.
    writer = _tensorboard_writer(spec.log_dir) if rank == 0 else None
    for step in range(start, len(steps)):
        lr = engine.get_lr()[0]
        metrics = run_step(
            engine,
            objective,
            split_step(steps[step], objective.lengths, world_size, num_micro)[rank],
        )
        metrics.update(
            step=step + 1,
            learning_rate=lr,
            resumed_from_step=start,
            world_size=world_size,
            rows_dropped=objective.rows_dropped,
        )
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"{spec.stage}/{key}", value, step + 1)
        if rank == 0:
            progress = {k: metrics.get(k) for k in ("step", "loss", "tokens_per_s")}
            write_json_atomically(Path(spec.progress_file), {**progress, "steps_total": len(steps)})
        if (step + 1) % cfg.checkpoint_every_steps == 0 or step + 1 == len(steps):
            save_checkpoint(engine, objective, step + 1, metrics, rank)
    if writer is not None:
        writer.close()
    # 5. The final model in HF format (ZeRO-3 params gathered, LoRA folded in).
    save_hf_model(engine, tokenizer, spec.output_dir, cfg.lora, rank)


def _tensorboard_writer(log_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed; step metrics go to the progress file only")
        return None
    return SummaryWriter(log_dir)
