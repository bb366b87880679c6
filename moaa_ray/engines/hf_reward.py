"""The ``hf_reward`` engine: a scalar reward model loaded with transformers' sequence classification,
run as its model card runs it (one conversation in its chat template, the reward read off the output
field ``reward_head`` names), in batches that score each conversation as it scores alone."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.core.conversations import conform
from moaa_ray.engines.base import Conversation
from moaa_ray.engines.hf import accepts_system, resolve_dtype
from moaa_ray.tiny_models import resolve_model_path

_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def fill_pad_token(tokenizer: Any, config: Any) -> None:
    """Give a tokenizer and a model config without a pad token one, so batches score as lone
    conversations do.

    transformers' sequence-classification heads score each row's rightmost token that is not the
    config's ``pad_token_id`` and refuse batches of more than one without one; a model published
    without one (Llama-3's) is run a conversation at a time and scores its last token. The pad is
    the config's where it has one, else eos, unless the chat template ends a conversation with eos
    (Llama-3-Instruct's ``<|eot_id|>``, Mistral's ``</s>``): the head would then score the token
    before it, so bos pads instead.

    Raises:
        ValueError: neither eos nor bos can pad.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token is not None else config.pad_token_id
    if pad is None:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False)
        last = tokenizer(text, add_special_tokens=False)["input_ids"][-1]
        fits = [
            t for t in (tokenizer.eos_token_id, tokenizer.bos_token_id) if t not in (None, last)
        ]
        if not fits:
            raise ValueError(
                f"{tokenizer.name_or_path}: no pad token, and neither eos nor bos can pad"
            )
        pad = fits[0]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    if config.pad_token_id is None:
        config.pad_token_id = pad


class HFRewardEngine:
    """Scores whole conversations with a sequence-classification reward model.

    The model config's ``reward_head`` names where its output holds the reward: ``logits``, a
    one-label head's ``logits[:, 0]``, or ``score``, a custom model's ``output.score`` (ArmoRM's).
    """

    batches_items = True  # waiting calls are merged into one batch (pools/replica.py)

    def __init__(self, config: ModelConfig):
        path = resolve_model_path(config.path)
        self.path, self.reward_head = path, config.reward_head
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Right padding: each conversation's tokens sit at the positions they have alone.
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=config.trust_remote_code, padding_side="right"
        )
        self.accepts_system = accepts_system(self.tokenizer, path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path,
            dtype=resolve_dtype(config.dtype, self.device),
            trust_remote_code=config.trust_remote_code,
            **config.engine_kwargs,
        ).to(self.device)
        self.model.eval()
        fill_pad_token(self.tokenizer, self.model.config)

    @torch.inference_mode()
    def score(self, conversations: list[Conversation]) -> list[float]:
        """One scalar per conversation (its last assistant turn is what is scored).

        Raises:
            ValueError: the model's output has no ``reward_head`` field, or more than one value
                per conversation in it.
        """
        texts = [
            self.tokenizer.apply_chat_template(
                conform(c, accepts_system=self.accepts_system), tokenize=False
            )
            for c in conversations
        ]
        inputs = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        output = self.model(**inputs)
        head = getattr(output, self.reward_head, None)
        if head is None:
            fields = list(output.keys()) if hasattr(output, "keys") else type(output).__name__
            raise ValueError(
                f"{self.path}: the model's output has no {self.reward_head!r} (set by the model "
                f"config's reward_head); it has {fields}"
            )
        values = head.reshape(len(texts), -1)
        if values.shape[1] != 1:
            raise ValueError(
                f"{self.path}: reward_head {self.reward_head!r} holds {values.shape[1]} values per "
                "conversation, not one reward (logits: a one-label head; score: output.score)"
            )
        return values[:, 0].float().tolist()
