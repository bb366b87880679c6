"""Ray Data steps of the evaluation stage: answer each turn, and grade MT-Bench answers 1-10.

A question's state is a tournament state (:mod:`moaa_ray.core.tournament`) plus ``question_id``,
``category``, ``turns``, ``reference``, ``model_answers``, ``baseline_answers`` (filled up front when
the benchmark file holds them), ``graded`` and ``grades``. Once both sides have answered every turn,
``samples`` is ``[model's last answer, baseline's last answer]``: the one pair the judging steps compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moaa_ray.config import SamplingConfig
from moaa_ray.core.tournament import new_tournament
from moaa_ray.core.winrates import parse_grade, render_grade_prompt
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.pools import ModelPool
from moaa_ray.eval.benchmarks import EvalQuestion
from moaa_ray.records import mark_failed

PAIR = (0, 1)  # samples[0] is the model's answer, samples[1] the baseline's
GRADE_PREFIX = "Rating: [["
GRADES = [str(grade) for grade in range(1, 11)]
SIDES = ("model_answers", "baseline_answers")


def new_question_state(
    row_id: str, question: EvalQuestion, source: str, baseline: list[str] | None, graded: bool
) -> dict:
    """The state of a question before answering.

    Args:
        row_id: the question's stable id.
        question: the benchmark question.
        source: where it came from, for rejects (``benchmark#question_id``).
        baseline: the file's baseline answer per turn, or None when a baseline model answers.
        graded: whether the grader rates the model's answers (MT-Bench).
    """
    # The judges see the user turns only, so neither side's earlier answers colour the verdict.
    prompt = [{"role": "user", "content": turn} for turn in question.turns]
    state = new_tournament(row_id, prompt, source)
    state.update(
        question_id=question.question_id,
        category=question.category,
        turns=list(question.turns),
        reference=question.reference,
        model_answers=[],
        baseline_answers=list(baseline or []),
        graded=graded,
        grades=[],
    )
    return state


def answer_conversation(turns: list[str], answers: list[str], turn: int) -> list[dict[str, str]]:
    """User turns up to ``turn`` (0-based) with this side's own earlier answers in between."""
    messages = []
    for index in range(turn + 1):
        messages.append({"role": "user", "content": turns[index]})
        if index < turn:
            messages.append({"role": "assistant", "content": answers[index]})
    return messages


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


def _params(sampling: SamplingConfig) -> SamplingParams:
    return SamplingParams(
        sampling.temperature, sampling.top_p, sampling.max_new_tokens, 1, sampling.seed
    )


def _pair_when_answered(state: dict) -> None:
    answers = [state[side] for side in SIDES]
    if not state["error"] and all(len(a) >= len(state["turns"]) for a in answers):
        state["samples"] = [a[len(state["turns"]) - 1] for a in answers]


@dataclass(frozen=True)
class AnswerStep:
    """One turn of every question from the model and, where it answers, the baseline model at once."""

    pools: dict[str, ModelPool]  # side ("model_answers" / "baseline_answers") -> its model's pool
    turn: int
    sampling: SamplingConfig

    def __call__(self, states: list[dict]) -> None:
        submitted = {}
        for side, pool in self.pools.items():
            live = [
                s
                for s in states
                if not s["error"] and len(s["turns"]) > self.turn and len(s[side]) == self.turn
            ]
            conversations = [answer_conversation(s["turns"], s[side], self.turn) for s in live]
            submitted[side] = (live, pool.submit("chat", conversations, _params(self.sampling)))
        for side, (live, refs) in submitted.items():
            for state, completion in zip(live, self.pools[side].collect(refs), strict=True):
                if completion.output is None:
                    mark_failed(state, f"answering failed: {completion.error}")
                else:
                    state[side].append(completion.output[0])
        for state in states:
            _pair_when_answered(state)


def _grade_request(state: dict, turn: int) -> list[dict]:
    reference = state["reference"]
    return render_grade_prompt(
        state["turns"][: turn + 1],
        state["model_answers"][: turn + 1],
        reference[turn] if reference and len(reference) > turn else None,
    )


@dataclass(frozen=True)
class GradeStep:
    """MT-Bench single grading: the grader rates each of the model's answer turns from 1 to 10."""

    pool: ModelPool
    mode: str  # "text": parse "Rating: [[N]]"; "logprob": expected grade
    sampling: SamplingConfig

    def __call__(self, states: list[dict]) -> None:
        items = [
            (s, t) for s in states if s["graded"] and not s["error"] for t in range(len(s["turns"]))
        ]
        conversations = [_grade_request(s, t) for s, t in items]
        if self.mode == "logprob":
            first = self.pool.submit("choice_logprobs", conversations, GRADE_PREFIX, GRADES)
            split = self.pool.submit(
                "choice_logprobs", conversations, GRADE_PREFIX + "1", ["0", "]"]
            )
            pairs = zip(self.pool.collect(first), self.pool.collect(split), strict=True)
            for (state, turn), (grade, ten) in zip(items, pairs, strict=True):
                if grade.output is None or ten.output is None:
                    mark_failed(state, f"grading failed: {grade.error or ten.error}")
                    continue
                score = expected_grade(grade.output, ten.output)
                state["grades"].append({"turn": turn + 1, "score": score, "raw": None})
            return
        completions = self.pool.chat(conversations, _params(self.sampling))
        for (state, turn), completion in zip(items, completions, strict=True):
            if completion.output is None:  # a failed call is not an ungradable answer
                mark_failed(state, f"grading failed: {completion.error}")
                continue
            text = completion.output[0]
            state["grades"].append({"turn": turn + 1, "score": parse_grade(text), "raw": text})
