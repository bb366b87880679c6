"""Tests for the sft/dpo sections of moaa_ray.config: defaults, checks, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from moaa_ray.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[3]
MODELS = 'models:\n  a: {path: "tiny:llama-a"}\n'


def _load(tmp_path, text: str, overrides=None):
    path = tmp_path / "run.yaml"
    path.write_text(MODELS + text)
    return load_config(path, overrides)


def test_sections_default_to_the_papers_recipe(tmp_path):
    config = _load(tmp_path, "sft: {model: a}\ndpo: {}\n")
    assert config.sft.learning_rate == 8e-6 and config.sft.global_batch_size == 128
    assert config.dpo.model is None  # the run's sft/model
    assert config.dpo.lr_schedule == "cosine" and config.dpo.warmup_ratio == 0.1
    assert config.dpo.precompute_ref_logprobs is True
    assert config.sft.optimizer == config.dpo.optimizer == "adamw"


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    # PyYAML reads 8e-6 as the string "8e-6".
    config = _load(tmp_path, "sft: {model: a, learning_rate: 8e-6}\n")
    assert config.sft.learning_rate == pytest.approx(8e-6)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ("sft: {model: nope}", "sft.model: model 'nope' is not defined"),
        ("dpo: {model: nope}", "dpo.model: model 'nope' is not defined"),
        ("sft: {model: a, zero_stage: 3, num_workers: [2, 4]}", "sft.zero_stage: .*same worker"),
        ("sft: {model: a, zero_stage: 0, offload: true}", "sft.offload: .*zero_stage 2 or 3"),
        ("sft: {model: a, zero_stage: 1}", "sft.zero_stage"),
        ("dpo: {loss_type: hinge}", "dpo.loss_type"),
        ("dpo: {optimizer: sgd}", "dpo.optimizer"),
        ("dpo: {label_smoothing: 0.5}", "dpo.label_smoothing"),
        ("dpo: {lora: {rank: 8}}", "dpo.lora.rank: unknown key"),
        ("dpo: {max_seq_len: 64, max_prompt_length: 65}", "dpo.* max_prompt_length=65 exceeds"),
        ("sft: {model: a, max_prompt_length: 0}", "sft.max_prompt_length"),
    ],
)
def test_bad_training_sections_name_the_key(tmp_path, section, match):
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, section + "\n")


@pytest.mark.parametrize("name", ["demo.yaml", "paper-llama31-8b.yaml"])
def test_shipped_configs_train(name, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / name)
    assert config.sft.model in config.models and config.dpo.model is None
    if name == "paper-llama31-8b.yaml":
        assert (config.sft.learning_rate, config.sft.global_batch_size) == (8e-6, 128)
        assert (config.dpo.beta, config.dpo.learning_rate, config.dpo.global_batch_size) == (
            0.01,
            5e-7,
            128,
        )
        assert config.sft.zero_stage == config.dpo.zero_stage == 3
        assert config.sft.num_workers == [8, 8] and config.sft.gpus_per_worker == 1


def test_training_waits_a_bounded_time_for_its_workers_and_names_what_is_missing(monkeypatch):
    import ray

    from moaa_ray.config import SFTConfig
    from moaa_ray.train.launch import wait_for_workers

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    section = SFTConfig(model="a", num_workers=[2, 2], cpus_per_worker=1, global_batch_size=4)
    with pytest.raises(RuntimeError, match=r"needs \{'CPU': 2.*has \{'CPU': 1.0\}"):
        wait_for_workers(section, timeout_s=0)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    wait_for_workers(section, timeout_s=0)
