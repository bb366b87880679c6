"""The ``pairrm`` engine: PairRM (Jiang et al., LLM-Blender, arXiv 2306.02561), a pairwise ranker on
DeBERTa-v3, loaded from its published checkpoint format (:mod:`moaa_ray.pairrm_model`) and run as
llm-blender runs it: fp16 on GPU, its source and candidate texts.

The engine's ``compare`` gives the logit that answer 1 beats answer 2 for (conversation, answer 1,
answer 2) items; callers ask for both orders, as llm-blender's ranking does, since the two orders read
different sequences.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation
from moaa_ray.engines.hf import accepts_system, resolve_dtype
from moaa_ray.pairrm_model import (
    CANDIDATE1,
    CANDIDATE2,
    CANDIDATE_MAX_LENGTH,
    SOURCE,
    SOURCE_MAX_LENGTH,
    DebertaV2PairRM,
    chat_template_source,
    comparison_texts,
    encode_pair,
)
from moaa_ray.tiny_models import resolve_model_path

PairItem = tuple[Conversation, str, str]  # (conversation before the answers, answer 1, answer 2)


def pairrm_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` is fp16 on GPU, as llm-blender's ``Blender.loadranker`` halves a ranker on CUDA
    (``RankerConfig.fp16`` defaults to True), and fp32 on CPU; otherwise the dtype named."""
    if name == "auto" and device == "cuda":
        return torch.float16
    return resolve_dtype(name, device)


class PairRMEngine:
    """Compares two answers to a conversation with a PairRM checkpoint.

    ``engine_kwargs`` may set ``source_max_length`` and ``candidate_max_length`` (llm-blender's
    1224 and 412); the rest goes to ``from_pretrained``. The model config's ``pairrm`` section picks
    the source: llm-blender's, or the conversation in a chat template (SPPO's scripts).

    Raises:
        ValueError: the tokenizer's marker tokens are not the ids the checkpoint was trained with.
    """

    batches_items = True  # waiting calls are merged into one batch (pools/replica.py)

    def __init__(self, config: ModelConfig):
        kwargs = dict(config.engine_kwargs)
        self.source_max_length = int(kwargs.pop("source_max_length", SOURCE_MAX_LENGTH))
        self.candidate_max_length = int(kwargs.pop("candidate_max_length", CANDIDATE_MAX_LENGTH))
        path = resolve_model_path(config.path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=config.trust_remote_code
        )
        self.model = DebertaV2PairRM.from_pretrained(
            path, dtype=pairrm_dtype(config.dtype, self.device), **kwargs
        ).to(self.device)
        self.model.eval()
        expected = {
            SOURCE: self.model.config.source_prefix_id,
            CANDIDATE1: self.model.config.cand1_prefix_id,
            CANDIDATE2: self.model.config.cand2_prefix_id,
        }
        found = {marker: self.tokenizer.convert_tokens_to_ids(marker) for marker in expected}
        if found != expected:
            raise ValueError(f"{path}: tokenizer marks {found}, the model expects {expected}")
        self.template_tokenizer: Any = None  # source_format chat_template: the policy's
        self.template_accepts_system = False
        template_path = config.pairrm.chat_template_tokenizer  # set for chat_template only
        if template_path is not None:
            template_path = resolve_model_path(template_path)
            self.template_tokenizer = AutoTokenizer.from_pretrained(
                template_path, trust_remote_code=config.trust_remote_code
            )
            self.template_accepts_system = accepts_system(self.template_tokenizer, template_path)

    def texts(self, conversation: Conversation, first: str, second: str) -> tuple[str, str, str]:
        """(source, candidate 1, candidate 2) that PairRM reads for two answers to a conversation."""
        if self.template_tokenizer is None:
            return comparison_texts(conversation, first, second)
        source = chat_template_source(
            self.template_tokenizer, conversation, self.template_accepts_system
        )
        return source, first, second

    @torch.inference_mode()
    def compare(self, items: list[PairItem]) -> list[float]:
        """The logit that answer 1 beats answer 2, per (conversation, answer 1, answer 2) item."""
        ids = [
            encode_pair(
                self.tokenizer,
                *self.texts(conversation, first, second),
                self.source_max_length,
                self.candidate_max_length,
            )
            for conversation, first, second in items
        ]
        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        return self.model(batch["input_ids"], batch["attention_mask"]).float().tolist()
