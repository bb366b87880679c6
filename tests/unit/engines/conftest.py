"""A tiny transformers engine, shared by the tests of its scoring methods."""

from __future__ import annotations

import pytest

from moaa_ray.config import ModelConfig


@pytest.fixture(scope="module")
def tiny_engine():
    """``HFEngine`` on ``tiny:llama-a``."""
    pytest.importorskip("torch")
    from moaa_ray.engines.hf import HFEngine

    return HFEngine(ModelConfig(path="tiny:llama-a"))
