"""transformers backend: batched ``generate`` on CPU or one GPU."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.tiny_models import resolve_model_path

logger = logging.getLogger(__name__)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` is bf16 on GPU and fp32 on CPU; otherwise a torch dtype name such as ``float16``."""
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


class HFEngine:
    """A causal LM loaded with transformers; left-padded batches, the model's chat template."""

    def __init__(self, config: ModelConfig):
        path = resolve_model_path(config.path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=config.trust_remote_code, padding_side="left"
        )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=resolve_dtype(config.dtype, self.device),
            trust_remote_code=config.trust_remote_code,
            **config.engine_kwargs,
        ).to(self.device)
        self.model.eval()
        logger.info("loaded %s on %s", path, self.device)

    def _encode(self, conversations: list[Conversation], prefix: str = ""):
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            + prefix
            for c in conversations
        ]
        return self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)

    @torch.inference_mode()
    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[str]]:
        """Sample ``params.n`` answers per conversation."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        inputs = self._encode(conversations)
        sampling = params.temperature > 0
        output = self.model.generate(
            **inputs,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [texts[i * params.n : (i + 1) * params.n] for i in range(len(conversations))]

    @torch.inference_mode()
    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """One forward pass: log-softmax of the next-token logits at each choice's first token."""
        inputs = self._encode(conversations, prefix)
        logits = self.model(**inputs).logits[:, -1, :].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        ids = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
        return logprobs[:, ids].tolist()
