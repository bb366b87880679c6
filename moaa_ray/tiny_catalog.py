"""The tiny offline models by name: what each one is. Builds nothing and imports nothing heavy, so a
config can check its model names; :mod:`moaa_ray.tiny_models` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

TINY_PREFIX = "tiny:"


@dataclass(frozen=True)
class TinySpec:
    """Architecture of one tiny model."""

    architecture: str  # "llama" or "qwen2"
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    seed: int
    task: str = "causal_lm"  # or "reward" (sequence classification, one label)
    chat_format: str = "chatml"  # a key of CHAT_FORMATS


TINY_MODELS: dict[str, TinySpec] = {
    "llama-a": TinySpec("llama", 128, 2, 2, seed=1),
    "qwen2-b": TinySpec("qwen2", 128, 2, 1, seed=2),
    "llama-c": TinySpec("llama", 192, 3, 3, seed=3),
    "qwen2-d": TinySpec("qwen2", 256, 2, 2, seed=4),
    "reward-e": TinySpec("llama", 128, 2, 2, seed=5, task="reward"),
    # Big enough (19M parameters) that per-step overhead does not dominate a training benchmark.
    "bench-512": TinySpec("llama", 512, 8, 4, seed=6),
    # The chat rules of the families users bring: Gemma (no system role), Mistral (alternation).
    "gemma-style": TinySpec("llama", 128, 2, 2, seed=7, chat_format="gemma"),
    "mistral-style": TinySpec("llama", 128, 2, 2, seed=8, chat_format="mistral"),
}


# Trained task models for "What is A + B?"; their recipes are moaa_ray.tasks.addition_models'.
ADDITION_MODELS = (
    "addition-base",
    "addition-proposer-a",
    "addition-proposer-b",
    "addition-proposer-c",
)
ADDITION_TRUNK = "addition-trunk"  # what every addition model is fine-tuned from
PAIRWISE_RANKERS = ("pairrm-f",)  # random, in PairRM's layout (moaa_ray.pairrm_model)
PREFERENCE_MODELS = ("gpm",)  # random, in GPM's layout with a prompt head (moaa_ray.gpm_model)
KNOWN_MODELS = (*TINY_MODELS, *ADDITION_MODELS, *PAIRWISE_RANKERS, *PREFERENCE_MODELS)
