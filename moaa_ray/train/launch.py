"""The driver side of a training stage: one Ray Train ``TorchTrainer`` run, its manifest entry, a summary.

Checkpoints live under ``<run_dir>/<stage>/`` (Ray Train's ``storage_path`` and ``name``); running the
same command again resumes from the latest of them. A stage recorded as done with the same section and
a saved model is skipped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from moaa_ray.config import DPOConfig, MoaaConfig, SFTConfig, dump_config
from moaa_ray.pipeline.cluster import connect
from moaa_ray.pipeline.runs import RunDir, StageDir
from moaa_ray.train.recipe import plan_steps
from moaa_ray.train.worker import WorkerSpec

logger = logging.getLogger(__name__)


def count_rows(data_path: str) -> int:
    """Rows in a stage's Parquet shards (from the file footers)."""
    import pyarrow.parquet as pq

    shards = StageDir(Path(data_path)).shards()
    if not shards:
        raise FileNotFoundError(f"no part-*.parquet shards in {data_path}")
    return sum(pq.ParquetFile(s).metadata.num_rows for s in shards)


def run_training(
    stage: str,
    config: MoaaConfig,
    run_dir: str | Path,
    section: SFTConfig | DPOConfig,
    model: tuple[str, bool],
    data_stage: str,
    train_fn: Any,
) -> dict[str, Any]:
    """Train one stage with Ray Train and record it in the run manifest.

    Args:
        stage: ``sft`` or ``dpo``; names the checkpoint folder, ``<stage>_model`` and the manifest entry.
        config: the whole run's config (recorded in the manifest; Ray address).
        run_dir: the run directory.
        section: the stage's config section.
        model: ``(path, trust_remote_code)`` of the starting weights (local, hub or ``tiny:``).
        data_stage: the run's stage folder read when ``section.data_path`` is None.
        train_fn: the per-worker function, called with ``{"spec": WorkerSpec}``.

    Returns:
        ``steps``, ``final_loss``, ``metrics`` (the last step's), ``model_path``, ``checkpoint``,
        ``seconds``; or the recorded summary plus ``skipped: True``.
    """
    started = time.monotonic()
    root = Path(run_dir).resolve()
    run = RunDir(root)
    output_dir = root / f"{stage}_model"
    plan = section.model_dump(mode="json")
    # 1. Skip a stage that already finished with this very section.
    previous = run.stage_status(stage)
    if previous.get("status") == "done" and previous.get("config") == plan and output_dir.is_dir():
        logger.info("%s is done (%s); delete it to train again", stage, output_dir)
        return {**previous, "skipped": True}
    # 2. Check the data against the batch plan before any worker starts. Workers run in their own
    # directories, so local paths go to them absolute.
    data_path = (
        str(Path(section.data_path).resolve()) if section.data_path else str(root / data_stage)
    )
    model_path = str(Path(model[0]).resolve()) if Path(model[0]).exists() else model[0]
    total_steps = len(
        plan_steps(
            count_rows(data_path),
            section.global_batch_size,
            section.num_epochs,
            section.seed,
            section.max_steps,
        )
    )
    run.record_start(dump_config(config))
    run.update_stage(stage, status="running", config=plan, steps_total=total_steps)
    # 3. Train; Ray Train restarts failed workers from the last checkpoint.
    spec = WorkerSpec(
        stage=stage,
        train=section,
        model_path=model_path,
        trust_remote_code=model[1],
        data_path=data_path,
        output_dir=str(output_dir),
        log_dir=str(root / "tensorboard" / stage),
    )
    connect(config)
    try:
        result = _build_trainer(train_fn, spec, root).fit()
    except Exception as exc:
        run.update_stage(stage, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    # 4. Record the outcome.
    metrics = dict(result.metrics or {})
    summary = {
        "steps": metrics.get("step"),
        "final_loss": metrics.get("loss"),
        "metrics": metrics,
        "model_path": str(output_dir),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    run.update_stage(stage, status="done", **summary)
    return summary


def _build_trainer(train_fn: Any, spec: WorkerSpec, root: Path):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    section = spec.train
    low, high = section.num_workers
    gpu = section.gpus_per_worker > 0
    resources = {"CPU": section.cpus_per_worker}
    if gpu:
        resources["GPU"] = section.gpus_per_worker
    return TorchTrainer(
        train_fn,
        train_loop_config={"spec": spec},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=low if low == high else (low, high),
            use_gpu=gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=spec.stage,
            storage_path=str(root),
            failure_config=FailureConfig(max_failures=section.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=section.num_checkpoints_to_keep),
            # DeepSpeed picks CUDA when it can; CPU workers need it said (no op builds either).
            worker_runtime_env={} if gpu else {"env_vars": {"DS_ACCELERATOR": "cpu"}},
        ),
    )
