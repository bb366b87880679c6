"""The evaluation stage's rows: one per finished question, with its score and judgment stats
(or the verifier's verdict), and the audit table of its judgments.

The score of a question is settled here, on the driver, from what the steps recorded in its state;
:mod:`~moaa_ray.pipeline.evaluate.results` sums the rows into ``results.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypedDict, cast

from moaa_ray.config import EvaluateConfig
from moaa_ray.core.alpaca_eval_judge import model_score
from moaa_ray.core.arena_hard import battles_from_verdicts
from moaa_ray.core.eval_question import (
    AlpacaPreference,
    ArenaVerdict,
    EvalQuestion,
    Grade,
    judge_of,
)
from moaa_ray.core.tournament import VerdictRules, judgment_stats, pair_comparisons
from moaa_ray.core.verification import Verifier
from moaa_ray.pipeline.evaluate.questions import answer_conversation
from moaa_ray.pipeline.judging import audit_row, verdict_rules
from moaa_ray.records import Reject, judgment_schema
from moaa_ray.stages.rundir import StageDir
from moaa_ray.stages.runner import BatchOutcome

PAIR = (0, 1)  # samples[0] is the model's answer, samples[1] the baseline's


_MODEL_SCORE = {"model_a": 0.0, "model_b": 1.0, "tie": 0.5}  # battles are (baseline, model, winner)


def _arena_score(verdicts: list[ArenaVerdict]) -> float | None:
    """The model's mean win score over a question's decided games (strength not weighted)."""
    scores = []
    for verdict in verdicts:
        games = (verdict["verdict"], None) if verdict["game"] == 1 else (None, verdict["verdict"])
        battles = battles_from_verdicts("model", "baseline", *games)
        if battles:
            scores.append(_MODEL_SCORE[battles[0][2]])
    return sum(scores) / len(scores) if scores else None


def _arena_stats(verdicts: list[ArenaVerdict]) -> dict[str, int]:
    """Judgments, abstentions, judges whose two games disagree on who won (position bias), and
    judgments the judge was asked to continue (``retries``)."""
    per_judge: dict[str, list[float]] = {}
    for verdict in verdicts:
        score = _arena_score([verdict])
        if score is not None:
            per_judge.setdefault(verdict["judge"], []).append(score)
    flips = sum(1 for s in per_judge.values() if len(s) == 2 and (s[0] - 0.5) * (s[1] - 0.5) < 0)
    return {
        "judgments": len(verdicts),
        "abstains": sum(v["verdict"] is None for v in verdicts),
        "position_flips": flips,
        "pairs": len({v["judge"] for v in verdicts}),
        "retries": sum(v["attempts"] > 1 for v in verdicts),
    }


def _alpaca_stats(preferences: list[AlpacaPreference]) -> dict[str, int]:
    """Judgments, and abstentions: judges whose first token was neither ``m`` nor ``M``."""
    return {
        "judgments": len(preferences),
        "abstains": sum(p["preference"] is None for p in preferences),
    }


def verify_answers(
    verifier: Verifier, turns: list[str], answers: list[str], more: Sequence[str] = ()
) -> tuple[bool | None, float | None]:
    """The verifier's verdict on the model's last answer, with the conversation that led to it
    (None when it cannot check the answer), and the share of that answer and the ``more`` samples
    of it that the verifier accepts, among those it can check (None when it can check none)."""
    last = len(turns) - 1
    asked = answer_conversation(turns, answers, last)
    verdicts = [verifier(asked, answer) for answer in [answers[last], *more]]
    checked = [bool(v) for v in verdicts if v is not None]
    first = None if verdicts[0] is None else bool(verdicts[0])
    return first, (sum(checked) / len(checked) if checked else None)


def _length_stats(state: EvalQuestion) -> dict[str, int]:
    """Answers cut at max_new_tokens per side, and prompts cut to fit a context window."""
    cut = {f"truncated_{side}": count for side, count in state["truncated"].items()}
    return cut | {"shortened_prompts": state["counts"]["shortened_prompts"]}


class QuestionRow(TypedDict):
    """A row of the stage: one finished question (:func:`question_schema`), its state's keys with
    the score it settled."""

    row_id: str
    benchmark: str
    question_id: str
    category: str | None
    turns: list[str]
    model_answers: list[str]
    more_answers: list[str]  # the last turn's other samples (verified, evaluate.num_samples > 1)
    baseline_answers: list[str]  # none for a verified or graded-only question
    criteria: list[str]
    grades: list[Grade]
    arena_verdicts: list[ArenaVerdict]
    alpaca_preferences: list[AlpacaPreference]
    score: float | None  # the model's win score against the baseline; None: none was decided
    stats: str  # JSON of the judgment stats and the answers and prompts cut
    correct: bool | None  # the verifier's verdict; None: not verified or not checkable
    sample_accuracy: float | None  # the share of the last turn's samples the verifier accepts


def _row(
    state: EvalQuestion,
    score: float | None,
    stats: dict[str, Any],
    correct: bool | None = None,
    sample_accuracy: float | None = None,
) -> QuestionRow:
    """The row written for a finished question."""
    return QuestionRow(
        row_id=state["row_id"],
        benchmark=state["benchmark"],
        question_id=state["question_id"],
        category=state["category"],
        turns=state["turns"],
        model_answers=state["model_answers"],
        more_answers=state["more_answers"],
        baseline_answers=state["baseline_answers"],
        criteria=state["criteria"],
        grades=state["grades"],
        arena_verdicts=state["arena_verdicts"],
        alpaca_preferences=state["alpaca_preferences"],
        score=score,
        stats=json.dumps(stats | _length_stats(state)),
        correct=correct,
        sample_accuracy=sample_accuracy,
    )


def _row_of(state: EvalQuestion, verifier: Verifier | None, rules: VerdictRules) -> QuestionRow:
    """A finished question's row: its win score and judgment stats, or the verifier's verdicts
    (``correct``, ``sample_accuracy``); a graded-only question has its grades alone."""
    judge = judge_of(state)
    if state["kind"] == "verified":
        assert verifier is not None  # checked by the config schema
        correct, sample_accuracy = verify_answers(
            verifier, state["turns"], state["model_answers"], state["more_answers"]
        )
        return _row(state, None, {}, correct, sample_accuracy)
    if judge == "arena_hard":
        verdicts = state["arena_verdicts"]
        return _row(state, _arena_score(verdicts), _arena_stats(verdicts))
    if judge == "alpaca_eval":
        preferences = state["alpaca_preferences"]
        score = model_score([p["preference"] for p in preferences])
        return _row(state, score, _alpaca_stats(preferences))
    if judge == "ensemble":
        tournament = state
        [comparison] = pair_comparisons(tournament, [PAIR], rules)
        return _row(state, comparison.score_i, judgment_stats(tournament, [PAIR], rules))
    return _row(state, None, {})


def read_question_rows(stage: StageDir) -> list[QuestionRow]:
    """Every row written so far, in :func:`question_schema`'s columns (as :func:`write_batch`
    writes them)."""
    table = stage.read()
    return cast(list[QuestionRow], table.to_pylist() if table is not None else [])


def write_batch(
    batch: list[EvalQuestion],
    ev: EvaluateConfig,
    verifier: Verifier | None,
    stage: StageDir,
    audit: StageDir,
) -> BatchOutcome:
    """Write a batch's finished questions (scored, graded or verified) and their judgments; a
    question in error becomes a reject, retried by the next run when an engine call failed."""
    rules = verdict_rules(ev.judging)
    rows, judgments, rejects = [], [], []
    for state in batch:
        if state["error"]:  # an engine failure: retried by the next run
            failed = bool(state.get("failed"))
            rejects.append(Reject(state["source"], -1, state["error"], state["row_id"], failed))
            continue
        rows.append(_row_of(state, verifier, rules))
        judgments += [audit_row(state, j) for j in state["judgments"]]
    audit.write_shard(judgments, judgment_schema())
    stage.write_shard(cast(list[dict[str, Any]], rows), question_schema())
    return BatchOutcome(len(rows), rejects)


def question_schema():
    """Arrow schema of the stage's rows: one question with both sides' answers (a verified or
    graded-only one: the model's alone) and its score, grades or verifier verdict (``correct``)."""
    import pyarrow as pa

    strings = pa.list_(pa.string())
    grade = pa.struct(
        [
            ("turn", pa.int32()),
            ("category", pa.string()),
            ("score", pa.float64()),
            ("raw", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("row_id", pa.string()),
            ("benchmark", pa.string()),
            ("question_id", pa.string()),
            ("category", pa.string()),
            ("turns", strings),
            ("model_answers", strings),
            ("more_answers", strings),
            ("baseline_answers", strings),
            ("criteria", strings),
            ("grades", pa.list_(grade)),
            (
                "arena_verdicts",
                pa.list_(
                    pa.struct(
                        [
                            ("judge", pa.string()),
                            ("game", pa.int32()),
                            ("verdict", pa.string()),
                            ("raw", pa.string()),
                            ("attempts", pa.int32()),
                        ]
                    )
                ),
            ),
            (
                "alpaca_preferences",
                pa.list_(
                    pa.struct(
                        [
                            ("judge", pa.string()),
                            ("preference", pa.float64()),
                            ("switched", pa.bool_()),
                            ("raw", pa.string()),
                        ]
                    )
                ),
            ),
            ("score", pa.float64()),
            ("stats", pa.string()),
            ("correct", pa.bool_()),
            ("sample_accuracy", pa.float64()),
        ]
    )
