"""An evaluation question's state (:class:`EvalQuestion`) and its kind: who answers it, who
compares the model's answer with the baseline's, and whether the grader rates it.

States are plain dicts, typed here, so that they cross Ray Data as JSON
(:mod:`moaa_ray.pipeline.streaming`). A question is a :class:`~moaa_ray.core.tournament.Tournament`
too, so the judging shared with the preference stage (:mod:`moaa_ray.pipeline.judging`) reads and
fills it.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from moaa_ray.core.tournament import Tournament

# A question's kind: who compares the model's answer with a baseline's (the ensemble, or each judge
# as arena-hard-auto or AlpacaEval 2 judges), with ``_graded`` where the grader rates the model's
# answers too (MT-Bench against a baseline); ``verified`` and ``graded`` (MT-Bench with
# ``baseline: none``): only the model answers, for the verifier or the grader alone.
QuestionKind = Literal[
    "verified",
    "graded",
    "ensemble",
    "ensemble_graded",
    "arena_hard",
    "arena_hard_graded",
    "alpaca_eval",
    "alpaca_eval_graded",
]
Judge = Literal["ensemble", "arena_hard", "alpaca_eval"]
Side = Literal["model_answers", "baseline_answers"]
PairKey = Literal["samples", "arena_answers", "alpaca_answers"]

# Per kind: who compares the model's answer with a baseline's (None: only the model answers), and
# whether the grader rates the model's answers (MT-Bench's single grading).
_MODES: dict[QuestionKind, tuple[Judge | None, bool]] = {
    "verified": (None, False),  # the verifier checks the model's last answer
    "graded": (None, True),  # MT-Bench with ``baseline: none``: the grader alone
    "ensemble": ("ensemble", False),  # the evaluate judges, with the aggregator judge
    "ensemble_graded": ("ensemble", True),  # MT-Bench against a baseline
    "arena_hard": ("arena_hard", False),  # each judge as arena-hard-auto judges
    "arena_hard_graded": ("arena_hard", True),
    "alpaca_eval": ("alpaca_eval", False),  # each judge as AlpacaEval 2's leaderboard judges
    "alpaca_eval_graded": ("alpaca_eval", True),
}

# Where each judge reads a question's pair once both sides answered.
_PAIR_KEYS: dict[Judge, PairKey] = {
    "ensemble": "samples",
    "arena_hard": "arena_answers",
    "alpaca_eval": "alpaca_answers",
}


class Grade(TypedDict):
    """The grader's rating of one answer turn."""

    turn: int  # 1-based
    category: str | None  # the question's
    score: float | None  # 1 to 10; None: no rating could be read
    raw: str | None  # the grader's reply; None for a grade read from log-probabilities


class ArenaVerdict(TypedDict):
    """One judge's verdict on one arena-hard-auto game."""

    judge: str
    game: int  # 1: the baseline as A; 2: the model as A
    verdict: str | None  # arena-hard-auto's label (``A>>B`` ... ``B>>A``); None: no single one
    raw: str  # the judge's replies, joined by newlines
    attempts: int  # replies: 2 when the first had no label and the judge was asked to continue


class AlpacaPreference(TypedDict):
    """One judge's AlpacaEval 2 preference."""

    judge: str
    preference: float | None  # 1 (the baseline) to 2 (the model); None: abstained
    switched: bool  # whether alpaca_eval showed the model's output first
    raw: str | None  # the log-probabilities as JSON or the text read; None: identical outputs


class EvalQuestion(Tournament):
    """The state of one benchmark question in the evaluation stage, from before answering to the
    row written for it (:mod:`moaa_ray.pipeline.evaluate.questions` builds it).

    Of the tournament's keys, ``source`` is ``benchmark#question_id``, ``prompt`` the user turns,
    ``samples`` the ensemble kinds' pair once both sides answered (``[model's, baseline's]``
    whole conversations), and ``rewards`` None.
    """

    # The question:
    benchmark: str  # the benchmark's key
    question_id: str  # the benchmark's id of the question
    category: str | None  # the benchmark's category
    turns: list[str]  # the user turns, in order
    reference: list[str] | None  # the grader's reference answer per turn (MT-Bench)
    kind: QuestionKind  # who answers, who compares and whether the grader rates: see _MODES
    temperature: float | None  # both sides' answer temperature; None: the evaluate section's
    max_new_tokens: int | None  # both sides' longest answer; None: the evaluate section's

    # Its answers and scores:
    model_answers: list[str]  # the model's answer per turn answered so far
    more_answers: list[
        str
    ]  # verified kind, evaluate.num_samples > 1: the last turn's other samples
    baseline_answers: list[str]  # the baseline's per turn: the file's up front, or the model's
    truncated: dict[Side, int]  # answers cut at max_new_tokens, per side
    grades: list[Grade]  # graded kinds: one per turn rated
    arena_answers: list[str]  # arena_hard kinds: [model's, baseline's] once answered
    arena_verdicts: list[ArenaVerdict]  # arena_hard kinds: two games per judge
    alpaca_answers: list[str]  # alpaca_eval kinds: [model's, baseline's] once answered
    alpaca_preferences: list[AlpacaPreference]  # alpaca_eval kinds: one per judge


def question_kind(judge: Judge | None, graded: bool) -> QuestionKind:
    """The kind of a question whose pair ``judge`` compares (None: only the model answers: a
    verified question, or a graded-only one) and which the grader rates or not."""
    return next(kind for kind, mode in _MODES.items() if mode == (judge, graded))


def judge_of(question: EvalQuestion) -> Judge | None:
    """Who compares the question's pair; None where only the model answers."""
    return _MODES[question["kind"]][0]


def is_judged(question: EvalQuestion) -> bool:
    """Whether a baseline answers the question too and judges compare the pair."""
    return judge_of(question) is not None


def is_graded(question: EvalQuestion) -> bool:
    """Whether the grader rates the model's answers (MT-Bench)."""
    return _MODES[question["kind"]][1]


def pair_key(question: EvalQuestion) -> PairKey:
    """Where the question's pair goes once both sides answered: read there by the judging step
    that compares it alone (a question only the model answers never has a pair)."""
    return _PAIR_KEYS[judge_of(question) or "ensemble"]
