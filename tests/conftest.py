"""Shared fixtures: one local Ray cluster per test session, on loopback, and tiny models built once."""

from __future__ import annotations

import os

import pytest

# Loopback only, no telemetry, nothing from a model hub. Token auth is off only for this test cluster.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every Ray test (8 logical CPUs so fractional actors fit)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dirs():
    """Paths of every tiny offline model (built on first use, cached across runs)."""
    from moaa_ray.tiny_models import TINY_MODELS, resolve_model_path

    return {name: resolve_model_path(f"tiny:{name}") for name in TINY_MODELS}


@pytest.fixture
def length_encoding(monkeypatch):
    """Sets how Arena-Hard style control loads tiktoken's encoding (a function returning one, or
    raising as offline), so no test downloads it; the counter chosen is forgotten before and after."""
    from moaa_ray.core import arena_hard

    def use(loader):
        monkeypatch.setattr(arena_hard, "_load_length_encoding", loader)

    arena_hard.answer_length_counter.cache_clear()
    yield use
    arena_hard.answer_length_counter.cache_clear()
