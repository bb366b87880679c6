"""Which tokens stand for a choice after a prompt, as the model's tokenizer writes the two together.

A verdict prompt ends with "Verdict: " and the choices are "A" and "B", but no tokenizer writes
"Verdict: A" as the prompt's tokens and then "A": byte-level BPE (GPT-2, Llama 3, Qwen) writes
``Verdict`` ``:`` ``ĠA`` and SentencePiece (Llama 2, Mistral, Gemma) ``▁Verdict`` ``:`` ``▁A``, the
prompt's trailing space merged into the choice's token; a vocabulary without ``ĠB`` writes ``Ġ`` ``B``;
a character-level tokenizer writes ``" "`` ``"A"``. Scoring "A" after the prompt's own tokens reads a
token the model never saw there. So each choice is read from the last token that the prompt and every
choice's encoding share, through the first token that holds a character of the choice: the
log-probability that the text goes on with the rest of the prompt and the start of that choice, the
same event for every choice. Pure functions over token ids; the engines encode and run the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChoiceRead:
    """One choice's log-probability: the sum of ``log P(tokens[k] | sequence[:start + k])``."""

    sequence: int  # index of the token sequence to run (it ends right before the last token read)
    start: int
    tokens: tuple[int, ...]


def plan_choices(
    prompt_ids: Sequence[Sequence[int]],
    continued_ids: Sequence[Sequence[Sequence[int]]],
    choices: Sequence[str],
) -> tuple[list[list[int]], list[list[ChoiceRead]]]:
    """The distinct token sequences to run and where to read each choice of each prompt.

    Choices whose first characters are the same may get the same value (e.g. "1" and "10" under a
    tokenizer that splits digits): only the first token holding a character of the choice is read.

    Args:
        prompt_ids: the tokens of each prompt (chat template and prefix).
        continued_ids: per choice, the tokens of each prompt followed by that choice.
        choices: the choices' texts, for error messages.

    Returns:
        ``(sequences, reads)``: ``reads[i][c]`` says where in which of ``sequences`` choice ``c`` of
        prompt ``i`` is read. Usually one sequence per prompt, the prompt without its last token or
        two, serves every choice.

    Raises:
        ValueError: when a choice adds no token, or changes the prompt's first token.
    """
    index: dict[tuple[int, ...], int] = {}
    reads = []
    for i, prompt in enumerate(prompt_ids):
        continued = [ids[i] for ids in continued_ids]
        ends = [
            _first_new_token(prompt, ids, choice)
            for ids, choice in zip(continued, choices, strict=True)
        ]
        start = min(ends)  # every choice's encoding shares the prompt's tokens before this
        row = []
        for ids, end in zip(continued, ends, strict=True):
            sequence = index.setdefault(tuple(ids[:end]), len(index))
            row.append(ChoiceRead(sequence, start, tuple(ids[start : end + 1])))
        reads.append(row)
    return [list(sequence) for sequence in index], reads


def _first_new_token(prompt: Sequence[int], continued: Sequence[int], choice: str) -> int:
    """Position of the first token where the prompt followed by ``choice`` departs from the prompt."""
    shared = 0
    for prompt_token, continued_token in zip(prompt, continued, strict=False):
        if prompt_token != continued_token:
            break
        shared += 1
    if shared >= len(continued):
        raise ValueError(f"choice {choice!r} adds no token to the prompt")
    if shared == 0:
        raise ValueError(f"choice {choice!r} changes the prompt's first token")
    return shared
