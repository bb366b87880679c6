"""transformers sequence-classification reward models: scalar (ArmoRM-like) or pairwise (PairRM-like)."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.core.conversations import conform
from moaa_ray.engines.base import Conversation
from moaa_ray.engines.hf import accepts_system, resolve_dtype
from moaa_ray.tiny_models import resolve_model_path


class HFRewardEngine:
    """Scores whole conversations with a one-label sequence-classification head."""

    batches_items = True  # waiting calls are merged into one batch (pools/replica.py)

    def __init__(self, config: ModelConfig):
        path = resolve_model_path(config.path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=config.trust_remote_code
        )
        self.accepts_system = accepts_system(self.tokenizer, path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=resolve_dtype(config.dtype, self.device),
            trust_remote_code=config.trust_remote_code,
            **config.engine_kwargs,
        ).to(self.device)
        self.model.eval()

    @torch.inference_mode()
    def score(self, conversations: list[Conversation]) -> list[float]:
        """One scalar per conversation (its last assistant turn is what is scored)."""
        texts = [
            self.tokenizer.apply_chat_template(
                conform(c, accepts_system=self.accepts_system), tokenize=False
            )
            for c in conversations
        ]
        inputs = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        return self.model(**inputs).logits[:, 0].float().tolist()
