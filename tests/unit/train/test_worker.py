"""Tests for moaa_ray.train.worker: the step loop's cadence, without Ray Train or DeepSpeed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import ray.train

from moaa_ray.config import SFTConfig
from moaa_ray.train import worker


def test_worker_reports_to_ray_train_only_with_its_checkpoints(monkeypatch, tmp_path):
    """Ray Train takes one report per 2 s poll, so a report per step would throttle training."""
    reports, checkpoints = [], []
    context = SimpleNamespace(get_world_rank=lambda: 0, get_world_size=lambda: 1)
    monkeypatch.setattr(ray.train, "get_context", lambda: context)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "report", lambda *args, **kwargs: reports.append(args))
    monkeypatch.setattr(worker, "load_tokenizer", lambda spec: None)
    engine = SimpleNamespace(get_lr=lambda: [0.1])
    monkeypatch.setattr(worker, "build_deepspeed_engine", lambda *args: engine)
    monkeypatch.setattr(worker, "run_step", lambda *args: {"loss": 1.0, "tokens_per_s": 5.0})
    monkeypatch.setattr(worker, "save_checkpoint", lambda *args: checkpoints.append(args[2]))
    monkeypatch.setattr(worker, "save_hf_model", lambda *args: None)
    train = SFTConfig(model="m", global_batch_size=2, max_steps=5, checkpoint_every_steps=2)
    spec = worker.WorkerSpec(
        stage="sft",
        train=train,
        model_path=str(tmp_path),
        trust_remote_code=False,
        data_path=str(tmp_path),
        output_dir=str(tmp_path / "model"),
        log_dir=str(tmp_path / "tensorboard"),
        progress_file=str(tmp_path / "progress.json"),
    )

    class Objective:
        lengths = [1] * 10

        def __init__(self, spec, tokenizer):
            pass

        def prepare(self, engine, checkpoint_dir):
            pass

    worker.train_worker(spec, Objective)
    assert checkpoints == [2, 4, 5] and reports == []
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"step": 5, "loss": 1.0, "tokens_per_s": 5.0, "steps_total": 5}
