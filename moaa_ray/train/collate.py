"""Tokenization and batching for SFT and DPO: the model's own chat template, loss on assistant tokens.

Pure functions over a tokenizer and lists; they run (and are tested) without Ray or a model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from moaa_ray.core.conversations import Messages, conform, template_accepts_system
from moaa_ray.train.losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
WARN_DROPPED_FRACTION = 0.01  # of a stage's rows, dropped for no trained token

Row = TypeVar("Row")


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


def cut_prompt(
    input_ids: list[int], mask: list[int], max_prompt_length: int | None
) -> tuple[list[int], list[int]]:
    """Keep only the last ``max_prompt_length`` tokens of the prompt (the tokens before the first
    trained one), so that a long prompt leaves room for the answer.

    Follows TRL's ``max_prompt_length``: ``prompt_ids[-max_prompt_length:]``, the prompt cut from the
    left, its end kept (trl 1.16 ``experimental/sdpo/sdpo_trainer.py``; its ``DPOTrainer`` has no
    prompt limit and instead drops such rows, as :func:`keep_trainable` does).

    Args:
        input_ids: the whole sequence.
        mask: 1 on trained tokens, of the same length.
        max_prompt_length: prompt tokens kept; None: the prompt is kept whole.

    Returns:
        ``(input_ids, mask)`` without the cut prompt tokens.
    """
    if max_prompt_length is None:
        return input_ids, mask
    prompt_len = mask.index(1) if 1 in mask else len(mask)
    start = max(prompt_len - max_prompt_length, 0)
    return input_ids[start:], mask[start:]


def _targets(
    input_ids: list[int], mask: list[int], max_seq_len: int, max_prompt_length: int | None
) -> Example:
    ids, mask = cut_prompt(input_ids, mask, max_prompt_length)
    ids = ids[:max_seq_len]
    targets = [ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
    return Example(ids, targets + [IGNORE_INDEX])


def is_trainable(example: Example) -> bool:
    """Whether the example has at least one trained token (else it adds no gradient)."""
    return any(t != IGNORE_INDEX for t in example.targets)


def keep_trainable(
    rows: list[Row], encode: Callable[[Row], Sequence[Example]]
) -> tuple[list[Row], int]:
    """The rows all of whose examples keep a trained token after cutting, and how many were dropped.

    A DPO pair or SFT conversation whose prompt fills ``max_seq_len`` would otherwise sit in the
    loss's denominator with no gradient (a DPO pair at a constant log 2). TRL drops such rows too
    (trl 1.16 ``DPOTrainer``: examples whose prompt alone fills ``max_length``). The driver warns
    about the count (:func:`warn_dropped_rows`).

    Args:
        rows: training rows.
        encode: a row's tokenized examples (one for SFT; chosen and rejected for DPO).

    Returns:
        ``(kept rows in order, number dropped)``.
    """
    kept = [row for row in rows if all(is_trainable(e) for e in encode(row))]
    return kept, len(rows) - len(kept)


def warn_dropped_rows(stage: str, dropped: int, total: int) -> bool:
    """Log a warning when more than 1% of a stage's rows had no trainable token; True if it did."""
    if total <= 0 or dropped <= WARN_DROPPED_FRACTION * total:
        return False
    logger.warning(
        "%s: dropped %d of %d rows with no trainable answer token after cutting to max_seq_len "
        "(raise max_seq_len or set max_prompt_length)",
        stage,
        dropped,
        total,
    )
    return True


def encode_conversation(
    tokenizer: Any, messages: Messages, max_seq_len: int, max_prompt_length: int | None = None
) -> Example:
    """An SFT example: every assistant turn of a (multi-turn) conversation is trained on.

    The tokens before the first assistant turn are cut to their last ``max_prompt_length``
    (:func:`cut_prompt`); then sequences longer than ``max_seq_len`` tokens are cut at the end.

    Raises:
        ValueError: the conversation has no assistant turn.
    """
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant turn to train on")
    ids, mask = assistant_mask(tokenizer, _conform(tokenizer, messages))
    return _targets(ids, mask, max_seq_len, max_prompt_length)


def encode_preference(
    tokenizer: Any,
    prompt: Messages,
    chosen: Messages,
    rejected: Messages,
    max_seq_len: int,
    max_prompt_length: int | None = None,
) -> tuple[Example, Example]:
    """A DPO pair: the prompt (possibly multi-turn) followed by each answer; only the answer is trained.

    Args:
        tokenizer: with a chat template.
        prompt: the conversation up to the answer.
        chosen: one assistant message (TRL's conversational preference format).
        rejected: one assistant message.
        max_seq_len: longer sequences are cut at the end (after the prompt is cut).
        max_prompt_length: the prompt keeps its last this many tokens (:func:`cut_prompt`);
            None: the prompt is kept whole.

    Returns:
        ``(chosen_example, rejected_example)``.
    """
    prompt_len = len(_render(tokenizer, _conform(tokenizer, prompt), add_generation_prompt=True))
    examples = []
    for answer in (chosen, rejected):
        if not answer or any(m["role"] != "assistant" for m in answer):
            raise ValueError("chosen and rejected must be non-empty lists of assistant messages")
        ids, mask = assistant_mask(tokenizer, _conform(tokenizer, prompt + answer))
        mask = [0] * prompt_len + mask[prompt_len:]
        examples.append(_targets(ids, mask, max_seq_len, max_prompt_length))
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
