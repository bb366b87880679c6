"""MT-Bench single grading as FastChat's ``llm_judge`` computes it (Zheng et al. 2023, arXiv 2306.05685).

Answers are sampled at FastChat's temperature per category. The grader rates each turn from 1 to 10
with FastChat's own prompts (``prompts/mt_bench_single.jsonl``, copied from
``fastchat/llm_judge/data/judge_prompts.jsonl`` at lm-sys/FastChat 0e6d3e4b, Apache-2.0):

* turn 1: ``single-v1``, or ``single-math-v1`` with the reference answer for math, reasoning and
  coding (``NEED_REF_CATS``);
* turn 2: ``single-v1-multi-turn`` / ``single-math-v1-multi-turn``, which show the whole
  conversation and grade the second answer.

A rating is the first ``[[N]]`` in the grader's reply, else the first ``[N]``; a reply with neither
has no rating and is left out of the means, as FastChat's ``show_result.py`` drops its -1 ratings.
Scores are the mean rating per turn and over every rated turn, and per category.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")
# fastchat/llm_judge/common.py temperature_config; other categories are sampled at 0.7.
CATEGORY_TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
OTHER_CATEGORY_TEMPERATURE = 0.7
GRADE_PREFIX = "Rating: [["  # what a grader writes right before its rating

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


@cache
def judge_prompts() -> dict[str, dict[str, str]]:
    """FastChat's single-grading prompts by name: ``{"system_prompt", "prompt_template"}``."""
    text = resources.files("moaa_ray.prompts").joinpath("mt_bench_single.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["name"]: row for row in rows}


def answer_temperature(category: str | None) -> float:
    """The temperature FastChat samples a category's answers at."""
    return CATEGORY_TEMPERATURES.get(category or "", OTHER_CATEGORY_TEMPERATURE)


def needs_reference(category: str | None) -> bool:
    """Whether FastChat grades a category against reference answers."""
    return category in NEED_REF_CATEGORIES


def render_grade_prompt(
    turns: Sequence[str],
    answers: Sequence[str],
    turn: int,
    category: str | None,
    reference: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """The grader's request for one answer turn, as FastChat's ``run_judge_single`` builds it.

    Args:
        turns: the question's user turns.
        answers: the model's answer per turn, at least up to ``turn``.
        turn: 0-based turn to grade. Turn 0 uses the single-turn prompt; a later turn the multi-turn
            prompt over the turn before it and this one (MT-Bench has two turns).
        category: the question's category; math, reasoning and coding are graded with the reference.
        reference: reference answers per turn; needed when the category takes a reference.

    Returns:
        ``[system, user]`` messages.

    Raises:
        ValueError: when an answer or a needed reference turn is missing.
    """
    if not 0 <= turn < len(turns) or len(answers) <= turn:
        raise ValueError(
            f"cannot grade turn {turn + 1}: {len(turns)} turns, {len(answers)} answers"
        )
    with_reference = needs_reference(category)
    if with_reference and (reference is None or len(reference) <= turn):
        raise ValueError(
            f"category {category!r} is graded against a reference answer, and turn {turn + 1} "
            "has none; set the benchmark's reference_answers_path"
        )
    refs = list(reference or []) if with_reference else []
    name = ("single-math-v1" if with_reference else "single-v1") + ("-multi-turn" if turn else "")
    prompt = judge_prompts()[name]
    if turn == 0:
        fields = {"question": turns[0], "answer": answers[0]}
        if refs:
            fields["ref_answer_1"] = refs[0]
    else:
        fields = {
            "question_1": turns[turn - 1],
            "question_2": turns[turn],
            "answer_1": answers[turn - 1],
            "answer_2": answers[turn],
        }
        if refs:
            fields.update(ref_answer_1=refs[turn - 1], ref_answer_2=refs[turn])
    return [
        {"role": "system", "content": prompt["system_prompt"]},
        {"role": "user", "content": prompt["prompt_template"].format(**fields)},
    ]


def parse_rating(text: str) -> float | None:
    """A grader's rating: the first ``[[N]]``, else the first ``[N]``; None when there is neither."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    return float(match.group(1)) if match else None


def expected_grade(logprobs: list[float], ten_split: list[float] | None) -> float | None:
    """Expected 1-10 grade, ``sum_g P(g) * g``, from log-probabilities of "1".."10" after the prefix.

    Args:
        logprobs: of "1".."10" right after ``Rating: [[``. Digit-splitting tokenizers give "10" the
            first token of "1", hence the same value.
        ten_split: of "0" and "]" right after ``Rating: [[1``; it divides the mass of "1" between 10
            and 1 when the two share a token. None: all of it counts as 1.

    Returns:
        The expected grade, or None when every choice is impossible (e.g. not in an API's top-k).
    """
    shared = logprobs[9] == logprobs[0]
    values = logprobs[:9] if shared else logprobs
    top = max(values)
    if top == -math.inf:
        return None
    weights = [math.exp(v - top) for v in values]
    probs = [w / sum(weights) for w in weights]
    if shared:
        p_zero = 0.0
        if ten_split is not None and max(ten_split) > -math.inf:
            p_zero = 1.0 / (1.0 + math.exp(ten_split[1] - ten_split[0]))
        probs = [probs[0] * (1.0 - p_zero), *probs[1:], probs[0] * p_zero]
    return sum(p * grade for p, grade in zip(probs, range(1, 11), strict=True))


def mt_bench_summary(grades: Sequence[Mapping[str, Any]]) -> dict:
    """Mean rating per turn, per category and overall, as FastChat's ``show_result.py --mode single``.

    Args:
        grades: one per graded answer turn: ``"turn"`` (1-based), ``"score"`` (None: no rating) and
            optionally ``"category"``.

    Returns:
        ``{"per_turn": {turn: mean}, "per_category": {category: mean}, "overall": mean of every
        rated turn, "num_graded", "num_missing"}``; ``overall`` is NaN when nothing was rated.
    """
    per_turn: dict[int, list[float]] = defaultdict(list)
    per_category: dict[str, list[float]] = defaultdict(list)
    missing = 0
    for index, grade in enumerate(grades):
        if "turn" not in grade or "score" not in grade:
            raise ValueError(f"grades[{index}] needs 'turn' and 'score' keys, got {sorted(grade)}")
        if grade["score"] is None:
            missing += 1
            continue
        per_turn[int(grade["turn"])].append(float(grade["score"]))
        if grade.get("category"):
            per_category[grade["category"]].append(float(grade["score"]))
    every = [score for scores in per_turn.values() for score in scores]
    return {
        "per_turn": {turn: statistics.fmean(per_turn[turn]) for turn in sorted(per_turn)},
        "per_category": {c: statistics.fmean(per_category[c]) for c in sorted(per_category)},
        "overall": statistics.fmean(every) if every else math.nan,
        "num_graded": len(every),
        "num_missing": missing,
    }
