"""Tests for moaa_ray.train.recipe: step plan, micro-batch split, LR schedule, DeepSpeed config."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from moaa_ray.train.recipe import (
    accumulation_steps,
    build_deepspeed_config,
    effective_zero_stage,
    lr_factor,
    plan_batches,
    split_step,
    warmup_steps,
)


def test_each_epoch_visits_every_row_at_most_once_in_full_batches():
    steps = plan_batches(10, 4, num_epochs=2, seed=0)
    assert len(steps) == 4  # 2 full batches per epoch, the 2 leftover rows dropped
    assert all(len(step) == 4 for step in steps)
    for epoch in (steps[:2], steps[2:]):
        rows = [r for step in epoch for r in step]
        assert len(set(rows)) == 8 and set(rows) <= set(range(10))


def test_plan_is_seeded_and_reshuffled_every_epoch():
    assert plan_batches(12, 4, 2, seed=3) == plan_batches(12, 4, 2, seed=3)
    assert plan_batches(12, 4, 1, seed=3) != plan_batches(12, 4, 1, seed=4)
    first, second = plan_batches(12, 12, 2, seed=3)
    assert sorted(first) == sorted(second) and first != second


def test_max_steps_cuts_the_plan_and_keeps_its_prefix():
    full = plan_batches(16, 4, 3, seed=1)
    assert plan_batches(16, 4, 3, seed=1, max_steps=5) == full[:5]


def test_too_few_rows_for_one_batch_is_an_error():
    with pytest.raises(ValueError, match="fewer than global_batch_size"):
        plan_batches(3, 4, 1, seed=0)


@pytest.mark.parametrize(
    ("global_batch", "micro", "workers", "expected"),
    [(128, 4, 8, 4), (8, 2, 2, 2), (8, 3, 3, 1), (128, 4, 6, 6)],
)
def test_accumulation_steps_cover_the_global_batch(global_batch, micro, workers, expected):
    steps = accumulation_steps(global_batch, micro, workers)
    assert steps == expected
    assert steps * micro * workers >= global_batch


def test_accumulation_steps_refuse_empty_micro_batches():
    with pytest.raises(ValueError, match="non-empty"):
        accumulation_steps(3, 1, 2)


def test_split_step_deals_every_row_once_into_non_empty_length_groups():
    lengths = [5, 90, 40, 10, 80, 30, 60, 20, 70, 50]
    rows = list(range(10))
    parts = split_step(rows, lengths, world_size=2, num_micro_batches=2)
    assert len(parts) == 2 and all(len(p) == 2 for p in parts)
    dealt = [r for worker in parts for micro in worker for r in micro]
    assert sorted(dealt) == rows
    sizes = [len(micro) for worker in parts for micro in worker]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    # Micro-step 0 of both workers holds the longest rows, micro-step 1 the shortest.
    first = [lengths[r] for w in parts for r in w[0]]
    second = [lengths[r] for w in parts for r in w[1]]
    assert min(first) > max(second)


def test_warmup_then_cosine_decays_to_zero():
    total, warm = 100, warmup_steps(100, 0.1)
    assert warm == 10
    assert lr_factor(0, total, warm, "cosine") == 0.0
    assert lr_factor(5, total, warm, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, total, warm, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_linear_and_constant_schedules():
    assert lr_factor(50, 100, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(1, 10, 0, "step")


def _config(**overrides):
    args = dict(
        zero_stage=2,
        offload=False,
        micro_batch_size=2,
        num_micro_batches=3,
        world_size=4,
        max_grad_norm=1.0,
        gpu=False,
    )
    return build_deepspeed_config(**{**args, **overrides})


def test_deepspeed_config_batch_sizes_and_client_optimizer():
    config = _config()
    assert config["train_batch_size"] == 2 * 3 * 4
    assert config["gradient_accumulation_steps"] == 3
    assert config["zero_allow_untested_optimizer"] is True
    assert "optimizer" not in config and "scheduler" not in config  # client objects, no op build
    assert config["bf16"]["enabled"] is False
    assert _config(gpu=True)["bf16"]["enabled"] is True


def test_deepspeed_config_zero3_offload_and_gather_on_save():
    zero = _config(zero_stage=3, offload=True)["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    zero2 = _config(zero_stage=2, offload=True)["zero_optimization"]
    assert "offload_optimizer" in zero2 and "offload_param" not in zero2


@pytest.mark.parametrize(("stage", "offload"), [(1, False), (0, True)])
def test_deepspeed_config_rejects_unsupported_setups(stage, offload):
    with pytest.raises(ValueError):
        _config(zero_stage=stage, offload=offload)


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_accepts_the_config(stage, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    parsed = ds_config.DeepSpeedConfig(_config(zero_stage=stage, world_size=1))
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_batch_size == 6
    assert math.isclose(parsed.gradient_clipping, 1.0)


def test_recipe_is_pure_python():
    code = "import sys, moaa_ray.train.recipe\nprint([m for m in ('torch', 'ray') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("stage", "workers", "offload", "effective"),
    [
        (2, [1, 1], False, 0),  # nothing to shard across: no flat copies
        (3, [1, 1], False, 3),  # never the default: kept as asked
        (0, [1, 1], False, 0),
        (2, [1, 1], True, 2),  # offload needs ZeRO
        (2, [1, 2], False, 2),  # elastic: may resume on 2 workers with this layout
        (2, [2, 2], False, 2),
        (3, [4, 4], False, 3),
    ],
)
def test_zero_shards_only_where_there_is_something_to_shard(stage, workers, offload, effective):
    assert effective_zero_stage(stage, workers, offload) == effective
