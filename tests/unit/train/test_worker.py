"""Tests for moaa_ray.train.worker: the step loop's cadence without Ray Train, and the client
optimizers through DeepSpeed on CPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import ray.train
import torch

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
    monkeypatch.setattr(worker, "save_checkpoint", lambda *args: checkpoints.append(args[2:4]))
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
        rows_dropped = 3

        def __init__(self, spec, tokenizer):
            pass

        def prepare(self, engine, checkpoint_dir):
            pass

    worker.train_worker(spec, Objective)
    assert [step for step, _ in checkpoints] == [2, 4, 5] and reports == []
    assert checkpoints[-1][1]["rows_dropped"] == 3  # the stage's summary reads the last metrics
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"step": 5, "loss": 1.0, "tokens_per_s": 5.0, "steps_total": 5}


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_rmsprop_steps_through_deepspeed_on_cpu_as_plain_torch_does(
    process_group, zero_stage, monkeypatch
):
    import deepspeed

    monkeypatch.setenv("LOCAL_RANK", "0")  # Ray Train sets it in its workers

    from moaa_ray.train.recipe import build_deepspeed_config

    torch.manual_seed(0)
    model, twin = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    twin.load_state_dict(model.state_dict())
    optimizer = worker.build_optimizer(list(model.parameters()), "rmsprop", 0.01, 0.0)
    assert isinstance(optimizer, torch.optim.RMSprop)
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # as the worker: no op build
    config = build_deepspeed_config(
        zero_stage=zero_stage,
        offload=False,
        micro_batch_size=1,
        num_micro_batches=1,
        world_size=1,
        max_grad_norm=0.0,
        gpu=False,
    )
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    reference = torch.optim.RMSprop(twin.parameters(), lr=0.01)
    for x in torch.randn(3, 1, 4):
        engine.backward(engine(x).pow(2).sum())
        engine.step()
        reference.zero_grad()
        twin(x).pow(2).sum().backward()
        reference.step()
    assert torch.allclose(engine.module.weight, twin.weight, atol=1e-6)
    assert not torch.allclose(twin.weight, torch.nn.Linear(4, 2).weight)  # it did move


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="sgd"):
        worker.build_optimizer([torch.nn.Parameter(torch.zeros(1))], "sgd", 0.1, 0.0)


def test_step_metrics_are_summed_from_device_tensors_and_numbers_alike(process_group):
    """run_step keeps each micro-batch's metrics as tensors and reads them back once per step."""
    sums = worker.all_reduce_sums(
        {"loss": torch.tensor(1.25) + torch.tensor(0.5), "tokens": 7}, torch.device("cpu")
    )
    assert sums == {"loss": 1.75, "tokens": 7.0}
