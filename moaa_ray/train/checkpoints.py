"""Checkpoints in and out of a DeepSpeed engine inside Ray Train, and the final model in HF format.

A checkpoint is DeepSpeed's own layout (every worker writes its optimizer shard into its local
directory; Ray Train merges them into one storage directory) plus ``trainer_state.json``. A restarted
run gets the latest one from ``ray.train.get_checkpoint()``: Ray Train keeps a snapshot of reported
checkpoints under ``<storage_path>/<name>``, so the same command resumes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

TAG = "state"  # DeepSpeed checkpoint tag (one per Ray checkpoint directory)
STATE_FILE = "trainer_state.json"


def save_checkpoint(engine: Any, objective: Any, step: int, metrics: dict, rank: int) -> None:
    """Write a checkpoint after ``step`` optimizer steps and report it with the step's metrics."""
    with tempfile.TemporaryDirectory() as directory:
        engine.save_checkpoint(directory, tag=TAG)
        if rank == 0:
            state = {"step": step, "world_size": dist.get_world_size()}
            Path(directory, STATE_FILE).write_text(json.dumps(state))
            objective.save(directory)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"step-{step:08d}",
        )


def restore_checkpoint(engine: Any, directory: str | None, world_size: int, zero_stage: int) -> int:
    """Load engine, optimizer and LR-schedule state from a checkpoint; return the steps it has done.

    On another worker count than the one that wrote it, a ZeRO-2 checkpoint restores the weights and
    the LR schedule while the optimizer moments restart (its shards are per worker); ZeRO-0 restores
    everything and ZeRO-3 refuses (its weights are sharded too).
    """
    if directory is None:
        return 0
    state = json.loads(Path(directory, STATE_FILE).read_text())
    same_workers = state["world_size"] == world_size
    if not same_workers:
        if zero_stage == 3:
            raise RuntimeError(
                f"checkpoint {directory} was written by {state['world_size']} ZeRO-3 workers and "
                f"cannot be resumed on {world_size}; use a fixed num_workers with zero_stage 3"
            )
        logger.warning(
            "checkpoint written by %d workers, resuming on %d", state["world_size"], world_size
        )
    # The LR schedule follows the current config (a rerun with more steps stretches it), so the
    # scheduler is placed at the step rather than restored with the old schedule's state.
    engine.load_checkpoint(
        directory,
        tag=TAG,
        load_optimizer_states=same_workers or zero_stage == 0,
        load_lr_scheduler_states=False,
    )
    step = int(state["step"])
    scheduler = engine.lr_scheduler
    scheduler.last_epoch = step
    for group, base_lr, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base_lr * factor(step)
    logger.info("resumed from %s after step %d", directory, step)
    return step


def merge_lora(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Fold peft LoRA adapters into their base weights: ``W + scaling * B @ A``.

    Args:
        state: a peft ``PeftModelForCausalLM`` state dict with the ``default`` adapter.
        scaling: ``lora_alpha / r``.

    Returns:
        A state dict with the base model's own keys.
    """
    merged = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            stem = key.removesuffix(".base_layer.weight")
            a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
            value = value + (scaling * (b.float() @ a.float())).to(value.dtype)
        merged[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = value
    return merged


def _full_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    # Collective under ZeRO-3: every worker must call it; only rank 0 gets the weights.
    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return engine.module.state_dict()


def save_hf_model(engine: Any, tokenizer: Any, output_dir: str, lora: Any, rank: int) -> None:
    """Save the trained model and tokenizer with ``save_pretrained`` (loadable by the hf and vllm engines).

    Called on every worker; rank 0 writes into a temporary directory and renames it into place, so
    ``output_dir`` only ever holds a complete model.
    """
    state = _full_state_dict(engine)
    if rank == 0:
        model = engine.module
        if lora is not None:
            state = merge_lora(state, lora.alpha / lora.r)
            model = model.get_base_model()
        target = Path(output_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        model.save_pretrained(tmp, state_dict={k: v.cpu() for k, v in state.items()})
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        logger.info("saved %s", target)
    dist.barrier()
