"""The driver side of a training stage: one Ray Train ``TorchTrainer`` run, its manifest entry, a summary.

Checkpoints live under ``<run_dir>/<stage>/`` (Ray Train's ``storage_path`` and ``name``); running the
same command again resumes from the latest of them. The stage's fingerprint covers its section, the
starting weights and the training data, so a stage recorded as done with the same fingerprint is
skipped, and checkpoints of another fingerprint (e.g. the pairs changed) are never resumed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from moaa_ray.config import DPOConfig, MoaaConfig, SFTConfig, dump_config
from moaa_ray.console import Progress, follow_file
from moaa_ray.stages.cluster import connect
from moaa_ray.stages.fingerprint import config_identity, digest_path
from moaa_ray.stages.layout import TRAINED_MODEL
from moaa_ray.stages.rundir import RunDir, StageDir
from moaa_ray.stages.runner import stage_label, stage_run
from moaa_ray.train.collate import warn_dropped_rows
from moaa_ray.train.recipe import plan_batches
from moaa_ray.train.worker import WorkerSpec

logger = logging.getLogger(__name__)


def count_parquet_rows(data_path: str) -> int:
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
    fresh: bool = False,
) -> dict[str, Any]:
    """Train one stage with Ray Train and record it in the run manifest.

    Args:
        stage: ``sft`` or ``dpo``; names the stage folder (Ray Train's checkpoints, ``model/``,
            ``tensorboard/``) and the manifest entry.
        config: the whole run's config (recorded in the manifest; Ray address).
        run_dir: the run directory.
        section: the stage's config section.
        model: ``(path, trust_remote_code)`` of the starting weights (local, hub or ``tiny:``).
        data_stage: the run's stage folder read when ``section.data_path`` is None.
        train_fn: the per-worker function, called with ``{"spec": WorkerSpec}``.
        fresh: if the section, starting weights or data changed, move the earlier checkpoints and
            model aside and train again (otherwise such a rerun is refused).

    Returns:
        ``steps``, ``final_loss``, ``rows_dropped`` (rows with no trained token after cutting),
        ``metrics`` (the last step's), ``model_path``, ``checkpoint``,
        ``seconds``, ``status``; or the recorded summary plus ``skipped: True``.
    """
    started = time.monotonic()
    root = Path(run_dir).resolve()
    run = RunDir(root)
    output_dir = root / stage / TRAINED_MODEL
    # Workers run in their own directories, so local paths go to them absolute.
    data_path = (
        str(Path(section.data_path).resolve()) if section.data_path else str(root / data_stage)
    )
    model_path = str(Path(model[0]).resolve()) if Path(model[0]).exists() else model[0]
    fingerprint = {
        **config_identity(section, stage),
        "model.path": model_path,
        "model.content": digest_path(model_path),
        "data.content": digest_path(data_path, "part-*.parquet"),  # the rows, nothing else
    }
    outputs = [root / stage]  # Ray Train checkpoints, model/ and tensorboard/
    # 1. Skip a stage that already finished with this very fingerprint.
    previous = run.stage_status(stage)
    done = previous.get("status") == "done" and previous.get("fingerprint") == fingerprint
    if done and output_dir.is_dir():
        logger.info("%s is done (%s); nothing to do", stage, output_dir)
        return {**previous, "skipped": True}
    with stage_run(run, stage, fingerprint, outputs, fresh) as record:
        # 2. Check the data against the batch plan before any worker starts.
        num_rows = count_parquet_rows(data_path)
        total_steps = len(
            plan_batches(
                num_rows,
                section.global_batch_size,
                section.num_epochs,
                section.seed,
                section.max_steps,
            )
        )
        run.record_start(dump_config(config))
        record.update(steps_total=total_steps)
        # 3. Train; Ray Train restarts failed workers from the last checkpoint.
        spec = WorkerSpec(
            stage=stage,
            train=section,
            model_path=model_path,
            trust_remote_code=model[1],
            data_path=data_path,
            output_dir=str(output_dir),
            log_dir=str(root / stage / "tensorboard"),
            progress_file=str(root / stage / "progress.json"),
        )
        connect(config)
        wait_for_workers(section, config.ray.train_start_timeout_s)
        with Progress(stage_label(run, stage), total_steps, unit="steps") as bar:

            def show(progress: dict) -> None:
                # The workers plan the steps over the rows they keep (collate.keep_trainable).
                bar.total = progress.get("steps_total") or bar.total
                figures = {k: progress.get(k) for k in ("loss", "tokens_per_s")}
                bar.update(progress.get("step") or 0, **figures)

            with follow_file(Path(spec.progress_file), show):
                result = _build_trainer(train_fn, spec, root).fit()
            show(dict(result.metrics or {}))
        # 4. Record the outcome.
        metrics = dict(result.metrics or {})
        warn_dropped_rows(stage, metrics.get("rows_dropped") or 0, num_rows)
        summary = {
            "steps": metrics.get("step"),
            "final_loss": metrics.get("loss"),
            "rows_dropped": metrics.get("rows_dropped"),
            "metrics": metrics,
            "model_path": str(output_dir),
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "seconds": round(time.monotonic() - started, 1),
        }
        return record.finish(summary)


def wait_for_workers(section: SFTConfig | DPOConfig, timeout_s: float) -> None:
    """Wait until the cluster holds the minimum workers' resources (an autoscaler may add nodes).

    Raises:
        RuntimeError: the resources did not appear within ``timeout_s``; names what is missing.
    """
    import ray

    low = section.num_workers[0]
    needed = {"CPU": section.cpus_per_worker * low, "GPU": section.gpus_per_worker * low}
    deadline = time.monotonic() + timeout_s
    while True:
        have = ray.cluster_resources()
        missing = {k: v for k, v in needed.items() if v and have.get(k, 0) < v}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray Train needs {needed} for {low} workers; the cluster has {have} after "
                f"ray.train_start_timeout_s={timeout_s:g}"
            )
        time.sleep(5)


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
