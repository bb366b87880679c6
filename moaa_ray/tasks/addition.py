"""The toy task "What is A + B?": prompts, splits and the verifier.

A reply is correct when its first integer is A + B (A and B in [0, 99]). Every (A, B) pair belongs to
exactly one split, fixed by a seed, so the held-out evaluation prompts are never seen by pretraining
the task models, by the MoA data, by SFT or by any DPO round. The role functions at the end play
the judges, the aggregator judge, the MoA aggregator or a reward model through the ``function``
engine.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from moaa_ray.core.judging import JudgePrompt, parse_judge_prompt, parse_verdict
from moaa_ray.core.moa import parse_references

MAX_OPERAND = 99
SPLIT_SEED = 20250505
# Sizes of the disjoint splits; the rest of the 10,000 pairs pretrains the task models.
SPLIT_SIZES = {"eval": 500, "sft": 1000, "dpo": 1500}
_PROMPT = re.compile(r"What is (\d+) \+ (\d+)\?")
_INTEGER = re.compile(r"-?\d+")


def make_prompt(a: int, b: int) -> str:
    """The task's user message."""
    return f"What is {a} + {b}?"


def parse_prompt(text: str) -> tuple[int, int] | None:
    """(A, B) of the last "What is A + B?" in ``text``, or None."""
    matches = _PROMPT.findall(text)
    return (int(matches[-1][0]), int(matches[-1][1])) if matches else None


def first_integer(text: str) -> int | None:
    """The first integer written in ``text`` (a leading minus sign included), or None."""
    match = _INTEGER.search(text)
    return int(match.group()) if match else None


def is_correct(a: int, b: int, answer: str) -> bool:
    """Whether the answer's first integer is A + B."""
    return first_integer(answer) == a + b


def verify(messages: Sequence[Mapping[str, str]], answer: str) -> bool | None:
    """The task's verifier: is ``answer`` correct for the conversation's last user message?

    Returns None when the last user message is not an addition question (nothing to verify).
    """
    users = [m["content"] for m in messages if m["role"] == "user"]
    operands = parse_prompt(users[-1]) if users else None
    return None if operands is None else is_correct(*operands, answer)


def splits(seed: int = SPLIT_SEED) -> dict[str, list[tuple[int, int]]]:
    """Disjoint (A, B) pairs per split: ``eval``, ``sft``, ``dpo`` and ``pretrain`` (the rest)."""
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    random.Random(seed).shuffle(pairs)
    result, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        result[name] = pairs[start : start + size]
        start += size
    result["pretrain"] = pairs[start:]
    return result


def prompt_rows(pairs: Sequence[tuple[int, int]], split: str) -> list[dict]:
    """JSONL rows of a split: ``{"id", "prompt", "answer"}``."""
    return [
        {"id": f"{split}-{a}+{b}", "prompt": make_prompt(a, b), "answer": str(a + b)}
        for a, b in pairs
    ]


# Role functions for the function engine: fn(messages, *, rng, **engine_kwargs) -> str | float.


def verifier_judge(
    messages: Sequence[Mapping[str, str]],
    *,
    rng: random.Random,
    flip_rate: float = 0.0,
    position_bias: float = 0.0,
) -> str:
    """A programmatic pairwise judge that knows the sums, with controlled noise.

    The true verdict is "A" when only Answer A is correct, "B" when only Answer B is, and "tie"
    when both or neither are. Noise, drawn from ``rng``:

    - with probability ``position_bias`` the verdict is "A" whatever the answers (a judge that
      favours the first answer shown);
    - otherwise, with probability ``flip_rate``, a verdict of "A" or "B" flips to the other one and
      a tie becomes "A" or "B" at random (a judge that errs).

    Args:
        messages: the judge's request, its last user message a judge (or aggregator judge) prompt
            of ``moaa_ray.core.judging`` about an addition question.
        rng: the source of the noise.
        flip_rate: probability of a wrong verdict, in [0, 1].
        position_bias: probability of answering "A" regardless, in [0, 1].

    Returns:
        A one-sentence evaluation, then a final line ``Verdict: A``, ``Verdict: B`` or
        ``Verdict: tie``.

    Raises:
        ValueError: a rate outside [0, 1], or a request that is no judge prompt about an addition
            question.
    """
    for name, rate in (("flip_rate", flip_rate), ("position_bias", position_bias)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {rate}")
    prompt = _judge_prompt(messages)
    operands = parse_prompt(prompt.conversation)
    if operands is None:
        raise ValueError("the judge prompt's conversation asks no 'What is A + B?' question")
    correct_a = is_correct(*operands, prompt.answer_a)
    correct_b = is_correct(*operands, prompt.answer_b)
    verdict = "A" if correct_a and not correct_b else "B" if correct_b and not correct_a else "tie"
    if rng.random() < position_bias:
        verdict = "A"
    elif rng.random() < flip_rate:
        verdict = rng.choice(["A", "B"]) if verdict == "tie" else {"A": "B", "B": "A"}[verdict]
    total = sum(operands)
    return (
        f"The sum is {total}; Answer A gives {_stated(prompt.answer_a)} and Answer B gives "
        f"{_stated(prompt.answer_b)}.\nVerdict: {verdict}"
    )


def majority_judge(messages: Sequence[Mapping[str, str]], *, rng: random.Random) -> str:
    """The aggregator judge of the MoA reward model: the plurality of the judges' verdicts.

    It counts votes and never reads the answers: it aggregates, it does not verify.

    Args:
        messages: the aggregator judge's request, its last user message an aggregator prompt of
            ``moaa_ray.core.judging``.
        rng: unused (part of the function engine's contract).

    Returns:
        The vote count, then a final line ``Verdict: X`` with the verdict most judges gave; "tie"
        when the most votes are shared or no judge gave a verdict.

    Raises:
        ValueError: a request that is no aggregator prompt (one with judge evaluations).
    """
    evaluations = _judge_prompt(messages).evaluations
    if not evaluations:
        raise ValueError("the majority judge needs an aggregator prompt with judge evaluations")
    votes = Counter(v for v in map(parse_verdict, evaluations) if v is not None)
    top = max(votes.values(), default=0)
    leaders = [v for v, count in votes.items() if count == top]
    verdict = leaders[0] if len(leaders) == 1 else "tie"
    counts = ", ".join(f"{v} {votes[v]}" for v in ("A", "B", "tie"))
    return f"Votes of {len(evaluations)} judges: {counts}.\nVerdict: {verdict}"


def plurality_aggregator(messages: Sequence[Mapping[str, str]], *, rng: random.Random) -> str:
    """The MoA aggregator for the task: the integer most references answer.

    Args:
        messages: the aggregator's request, with the references in its system message as
            ``moaa_ray.core.moa.with_references`` (packaged template) puts them.
        rng: unused (part of the function engine's contract).

    Returns:
        The most common first integer of the references, as text (e.g. ``"68"``); a tie goes to the
        one that appears first. "I do not know." when no reference has an integer.

    Raises:
        ValueError: a request without references in its system message.
    """
    systems = [m["content"] for m in messages if m["role"] == "system"]
    references = parse_references(systems[0]) if systems else []
    if not references:
        raise ValueError("the aggregator needs references in the system message")
    counts = Counter(n for n in map(first_integer, references) if n is not None)
    if not counts:
        return "I do not know."
    # A Counter keeps first appearances in order, and max() returns the first of equal counts.
    return str(max(counts, key=counts.__getitem__))


def verifier_reward(messages: Sequence[Mapping[str, str]], *, rng: random.Random) -> float:
    """A scalar reward model that verifies: 1.0 for a correct last answer, else 0.0.

    Args:
        messages: a conversation ending with the assistant answer to score, after an addition
            question from the user.
        rng: unused (part of the function engine's contract).

    Raises:
        ValueError: a conversation that does not end with an assistant answer to an addition
            question.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the reward needs a conversation ending with an assistant message")
    correct = verify(messages[:-1], messages[-1]["content"])
    if correct is None:
        raise ValueError("the last user message is no 'What is A + B?' question")
    return float(correct)


def _judge_prompt(messages: Sequence[Mapping[str, str]]) -> JudgePrompt:
    users = [m["content"] for m in messages if m["role"] == "user"]
    prompt = parse_judge_prompt(users[-1]) if users else None
    if prompt is None:
        raise ValueError("the last user message is no judge prompt of moaa_ray.core.judging")
    return prompt


def _stated(answer: str) -> str:
    number = first_integer(answer)
    return "no number" if number is None else str(number)
