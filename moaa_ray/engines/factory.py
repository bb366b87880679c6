"""The factory that picks a backend by ``engine`` name; no backend imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moaa_ray.engines.base import Engine

if TYPE_CHECKING:
    from moaa_ray.config import ModelConfig


def build_engine(config: ModelConfig) -> Engine:
    """Construct the backend named by ``config.engine`` (imports only that backend's library).

    ``hf_reward`` is a sequence-classification reward model: it has ``score`` instead of ``chat``;
    ``pairrm`` is a pairwise ranker: it has ``compare``; ``gpm`` scores a prompt's answers against
    each other: it has ``preference_table``. ``function`` calls a Python function, for
    ``chat`` and ``score`` alike.
    """
    if config.engine == "hf":
        from moaa_ray.engines.hf import HFEngine

        return HFEngine(config)
    if config.engine == "vllm":
        from moaa_ray.engines.vllm_async import VLLMEngine

        return VLLMEngine(config)  # type: ignore[return-value]  # async methods (see Engine)
    if config.engine == "hf_reward":
        from moaa_ray.engines.hf_reward import HFRewardEngine

        return HFRewardEngine(config)  # type: ignore[return-value]
    if config.engine == "pairrm":
        from moaa_ray.engines.pairrm import PairRMEngine

        return PairRMEngine(config)  # type: ignore[return-value]
    if config.engine == "gpm":
        from moaa_ray.engines.gpm import GPMEngine

        return GPMEngine(config)  # type: ignore[return-value]
    if config.engine == "openai_http":
        from moaa_ray.engines.openai_http import OpenAIHTTPEngine

        return OpenAIHTTPEngine(config)
    if config.engine == "simulated":
        from moaa_ray.engines.simulated import SimulatedEngine

        return SimulatedEngine(config)
    if config.engine == "function":
        from moaa_ray.engines.function import FunctionEngine

        return FunctionEngine(config)
    raise ValueError(f"unknown engine {config.engine!r}")
