"""transformers backend: batched ``generate`` on CPU or one GPU."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moaa_ray.config import ModelConfig
from moaa_ray.core.conversations import conform, template_accepts_system
from moaa_ray.engines.base import Answer, Conversation, SamplingParams
from moaa_ray.engines.choice_tokens import plan_choices
from moaa_ray.tiny_models import resolve_model_path

logger = logging.getLogger(__name__)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` is bf16 on GPU and fp32 on CPU; otherwise a torch dtype name such as ``float16``."""
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def accepts_system(tokenizer: Any, name: str) -> bool:
    """Whether the tokenizer's chat template takes a system message; logs when it does not."""
    if template_accepts_system(tokenizer):
        return True
    logger.info("%s: chat template takes no system message; it goes in the first user turn", name)
    return False


def left_padded_tokenizer(path: str, config: ModelConfig) -> tuple[Any, bool]:
    """A causal LM's tokenizer padding on the left (eos pads where it has no pad token), and
    whether its chat template takes a system turn."""
    tokenizer = AutoTokenizer.from_pretrained(
        path, trust_remote_code=config.trust_remote_code, padding_side="left"
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, accepts_system(tokenizer, path)


class HFEngine:
    """A causal LM loaded with transformers; left-padded batches, the model's chat template."""

    batches_items = True  # waiting calls are merged into one batch (pools/replica.py)

    def __init__(self, config: ModelConfig):
        path = resolve_model_path(config.path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.accepts_system = left_padded_tokenizer(path, config)
        self.model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=resolve_dtype(config.dtype, self.device),
            trust_remote_code=config.trust_remote_code,
            **config.engine_kwargs,
        ).to(self.device)
        self.model.eval()
        end = self.model.generation_config.eos_token_id
        end = (
            end if isinstance(end, list) else [self.tokenizer.eos_token_id if end is None else end]
        )
        self._end_ids = torch.tensor(end, device=self.device)  # generation stops at any of them
        logger.info("loaded %s on %s", path, self.device)

    def _encode(self, conversations: list[Conversation], prefix: str | list[str] = ""):
        """The chat-templated conversations, each continued by ``prefix`` (one per conversation
        when a list), left-padded."""
        prefixes = [prefix] * len(conversations) if isinstance(prefix, str) else prefix
        prompts = [
            self.tokenizer.apply_chat_template(
                conform(c, accepts_system=self.accepts_system),
                tokenize=False,
                add_generation_prompt=True,
            )
            + text
            for c, text in zip(conversations, prefixes, strict=True)
        ]
        return self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)

    @torch.inference_mode()
    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Sample ``params.n`` answers per conversation; one without an end token was cut."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        inputs = self._encode(conversations)
        sampling = params.temperature > 0
        copies = params.n if sampling else 1  # greedy answers are identical: decode one, repeat it
        output = self.model.generate(
            **inputs,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=copies,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        generated = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        ended = torch.isin(generated, self._end_ids).any(dim=1).tolist()
        answers = [Answer(t, "stop" if e else "length") for t, e in zip(texts, ended, strict=True)]
        return [
            [answers[i * copies + j % copies] for j in range(params.n)]
            for i in range(len(conversations))
        ]

    @torch.inference_mode()
    def answer_logprobs(self, conversations: list[Conversation]) -> list[float]:
        """Mean log-probability of the tokens of each conversation's last (assistant) turn, given
        the turns before it: how likely the model finds the answer, per token; one forward pass.
        An empty answer scores ``-inf``."""
        heads = self._encode([c[:-1] for c in conversations])["attention_mask"].sum(dim=1)
        full = self._encode(
            [c[:-1] for c in conversations], [c[-1]["content"] for c in conversations]
        )
        mask = full["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        logits = self.model(**full, position_ids=positions).logits
        # Answer token k of a row sits at column width - answer_length + k (left padding), and is
        # predicted by the logits one column before; only those columns get a softmax.
        answer_lengths = (mask.sum(dim=1) - heads).tolist()
        width = mask.shape[1]
        rows = [r for r, n in enumerate(answer_lengths) for _ in range(n)]
        columns = [width - n + k for n in answer_lengths for k in range(n)]
        logprobs = torch.log_softmax(logits[rows, [c - 1 for c in columns]].float(), dim=-1)
        picked = iter(logprobs[torch.arange(len(rows)), full["input_ids"][rows, columns]].tolist())
        return [
            sum(next(picked) for _ in range(n)) / n if n > 0 else float("-inf")
            for n in answer_lengths
        ]

    @torch.inference_mode()
    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Log-probability of each choice after ``prefix``, read from the tokens the tokenizer
        writes for prefix + choice (:mod:`moaa_ray.engines.choice_tokens`); one forward pass."""

        def token_lists(batch) -> list[list[int]]:
            pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
            return [ids[mask.bool()].tolist() for ids, mask in pairs]

        prompts = token_lists(self._encode(conversations, prefix))
        continued = [token_lists(self._encode(conversations, prefix + c)) for c in choices]
        sequences, reads = plan_choices(prompts, continued, choices)
        width = max(map(len, sequences))
        pads = [width - len(s) for s in sequences]
        pad_id = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad_id] * p + s for p, s in zip(pads, sequences, strict=True)])
        mask = torch.tensor([[0] * p + [1] * len(s) for p, s in zip(pads, sequences, strict=True)])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
        ).logits
        # Token k of a read follows the sequence's first start + k tokens: logits at start + k - 1.
        rows, columns, tokens = [], [], []
        for read in [read for row in reads for read in row]:
            for k, token in enumerate(read.tokens):
                rows.append(read.sequence)
                columns.append(pads[read.sequence] + read.start + k - 1)
                tokens.append(token)
        logprobs = torch.log_softmax(logits[rows, columns].float(), dim=-1)
        picked = iter(logprobs[torch.arange(len(tokens)), tokens].tolist())
        return [[sum(next(picked) for _ in read.tokens) for read in row] for row in reads]
