"""Tokenization and batching for SFT and DPO: the model's own chat template, loss on assistant tokens.

Pure functions over a tokenizer and lists; they run (and are tested) without Ray or a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from moaa_ray.core.conversations import Messages, conform, template_accepts_system
from moaa_ray.train.losses import IGNORE_INDEX

_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class Example:
    """One tokenized sequence; ``targets[t]`` is what position ``t`` learns to predict (or ignored)."""

    input_ids: list[int]
    targets: list[int]


@dataclass(frozen=True)
class Batch:
    """Model inputs plus what the losses need; ``segment_ids`` maps positions to examples (-1: pad)."""

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    segment_ids: torch.Tensor
    num_examples: int
    num_tokens: int

    def to(self, device: torch.device) -> Batch:
        """The same batch with its tensors on ``device``."""
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.targets.to(device),
            self.segment_ids.to(device),
            self.num_examples,
            self.num_tokens,
        )


def _conform(tokenizer: Any, messages: Messages) -> Messages:
    """The conversation as the template takes it (see :func:`moaa_ray.core.conversations.conform`).

    The probe is one small render, cheap beside tokenizing the example; not cached, so a tokenizer
    whose template is replaced is probed anew.
    """
    return conform(messages, accepts_system=template_accepts_system(tokenizer))


def _render(tokenizer: Any, messages: Messages, add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


def _check_prefix(prefix: list[int], full: list[int], what: str) -> None:
    if full[: len(prefix)] != prefix:
        raise ValueError(
            f"the chat template renders {what} differently once more turns follow, so assistant "
            "tokens cannot be located; use a template with {% generation %} markers"
        )


def assistant_mask(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of a conversation in the tokenizer's chat template and a 0/1 mask of assistant tokens.

    Templates with ``{% generation %}`` markers give the mask directly. For other templates, each
    assistant turn is the span its message adds to the rendered conversation before it (with the
    generation prompt); a template that rewrites earlier turns is rejected.

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        messages: ``[{"role", "content"}, ...]``, any number of turns.

    Returns:
        ``(input_ids, mask)`` of equal length.
    """
    if _GENERATION_MARKER.search(tokenizer.chat_template or ""):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["input_ids"]), list(out["assistant_masks"])
    ids: list[int] = []
    mask: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        turn = _render(tokenizer, messages[: i + 1])
        _check_prefix(ids, prompt, "the conversation")
        _check_prefix(prompt, turn, "the generation prompt")
        mask += [0] * (len(prompt) - len(ids)) + [1] * (len(turn) - len(prompt))
        ids = turn
    full = _render(tokenizer, messages)
    _check_prefix(ids, full, "the conversation")
    return full, mask + [0] * (len(full) - len(ids))


def _targets(input_ids: list[int], mask: list[int], max_seq_len: int) -> Example:
    ids = input_ids[:max_seq_len]
    targets = [ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
    return Example(ids, targets + [IGNORE_INDEX])


def encode_conversation(tokenizer: Any, messages: Messages, max_seq_len: int) -> Example:
    """An SFT example: every assistant turn of a (multi-turn) conversation is trained on.

    Sequences longer than ``max_seq_len`` tokens are cut at the end.

    Raises:
        ValueError: the conversation has no assistant turn.
    """
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant turn to train on")
    return _targets(*assistant_mask(tokenizer, _conform(tokenizer, messages)), max_seq_len)


def encode_preference(
    tokenizer: Any, prompt: Messages, chosen: Messages, rejected: Messages, max_seq_len: int
) -> tuple[Example, Example]:
    """A DPO pair: the prompt (possibly multi-turn) followed by each answer; only the answer is trained.

    Args:
        tokenizer: with a chat template.
        prompt: the conversation up to the answer.
        chosen: one assistant message (TRL's conversational preference format).
        rejected: one assistant message.
        max_seq_len: longer sequences are cut at the end.

    Returns:
        ``(chosen_example, rejected_example)``.
    """
    prompt_len = len(_render(tokenizer, _conform(tokenizer, prompt), add_generation_prompt=True))
    examples = []
    for answer in (chosen, rejected):
        if not answer or any(m["role"] != "assistant" for m in answer):
            raise ValueError("chosen and rejected must be non-empty lists of assistant messages")
        ids, mask = assistant_mask(tokenizer, _conform(tokenizer, prompt + answer))
        examples.append(_targets(ids, [0] * prompt_len + mask[prompt_len:], max_seq_len))
    return examples[0], examples[1]


def swap_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row with its chosen and rejected answers exchanged (the DPO negative control)."""
    return {**row, "chosen": row["rejected"], "rejected": row["chosen"]}


def collate(examples: list[Example], pad_token_id: int, packed: bool) -> Batch:
    """Stack examples into one batch.

    Args:
        examples: tokenized sequences.
        pad_token_id: filler of padded rows.
        packed: one row without padding whose position ids restart at every example
            (transformers then keeps the examples apart in attention; pays with flash-attention
            kernels), else right-padded rows with an attention mask.

    Returns:
        The batch.
    """
    lengths = [len(e.input_ids) for e in examples]
    if packed:
        inputs = {
            "input_ids": torch.tensor([[t for e in examples for t in e.input_ids]]),
            "position_ids": torch.tensor([[p for n in lengths for p in range(n)]]),
        }
        targets = torch.tensor([[t for e in examples for t in e.targets]])
        segments = torch.tensor([[i for i, n in enumerate(lengths) for _ in range(n)]])
    else:
        width = max(lengths)
        pads = [width - n for n in lengths]
        inputs = {
            "input_ids": torch.tensor(
                [e.input_ids + [pad_token_id] * p for e, p in zip(examples, pads, strict=True)]
            ),
            "attention_mask": torch.tensor([[1] * n + [0] * (width - n) for n in lengths]),
        }
        targets = torch.tensor(
            [e.targets + [IGNORE_INDEX] * p for e, p in zip(examples, pads, strict=True)]
        )
        segments = torch.tensor([[i] * n + [-1] * (width - n) for i, n in enumerate(lengths)])
    return Batch(inputs, targets, segments, len(examples), sum(lengths))
