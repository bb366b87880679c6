"""The evaluation stage's rows: one per finished question, with its score and judgment stats
(or the verifier's verdict), and the audit table of its judgments.

The score of a question is settled here, on the driver, from what the steps recorded in its state;
:mod:`~moaa_ray.pipeline.evaluate.results` sums the rows into ``results.json``.
"""

from __future__ import annotations

import json

from moaa_ray.config import EvaluateConfig
from moaa_ray.core.alpaca_eval_judge import model_score
from moaa_ray.core.arena_hard import battles_from_verdicts
from moaa_ray.core.tournament import judgment_stats, pair_comparisons
from moaa_ray.core.verification import Verifier
from moaa_ray.pipeline.evaluate.questions import answer_conversation
from moaa_ray.pipeline.judging import audit_row, verdict_rules
from moaa_ray.records import Reject, judgment_schema
from moaa_ray.runs.rundir import StageDir
from moaa_ray.runs.runner import BatchOutcome

PAIR = (0, 1)  # samples[0] is the model's answer, samples[1] the baseline's


_MODEL_SCORE = {"model_a": 0.0, "model_b": 1.0, "tie": 0.5}  # battles are (baseline, model, winner)


def _arena_score(verdicts: list[dict]) -> float | None:
    """The model's mean win score over a question's decided games (strength not weighted)."""
    scores = []
    for verdict in verdicts:
        games = (verdict["verdict"], None) if verdict["game"] == 1 else (None, verdict["verdict"])
        battles = battles_from_verdicts("model", "baseline", *games)
        if battles:
            scores.append(_MODEL_SCORE[battles[0][2]])
    return sum(scores) / len(scores) if scores else None


def _arena_stats(verdicts: list[dict]) -> dict:
    """Judgments, abstentions, and judges whose two games disagree on who won (position bias)."""
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
    }


def _alpaca_stats(preferences: list[dict]) -> dict:
    """Judgments, and abstentions: judges whose first token was neither ``m`` nor ``M``."""
    return {
        "judgments": len(preferences),
        "abstains": sum(p["preference"] is None for p in preferences),
    }


def verify_answers(verifier: Verifier, turns: list[str], answers: list[str]) -> bool | None:
    """The verifier's verdict on the model's last answer, with the conversation that led to it;
    None when it cannot check the answer."""
    last = len(turns) - 1
    verdict = verifier(answer_conversation(turns, answers, last), answers[last])
    return None if verdict is None else bool(verdict)


def _length_stats(state: dict) -> dict:
    """Answers cut at max_new_tokens per side, and prompts cut to fit a context window."""
    cut = {f"truncated_{side}": count for side, count in state["truncated"].items()}
    return cut | {"shortened_prompts": state["counts"]["shortened_prompts"]}


# State keys written as columns of the stage's rows, with the score and judgment stats.
_STATE_COLUMNS = (
    "row_id", "benchmark", "question_id", "category", "turns", "model_answers",
    "baseline_answers", "criteria", "grades", "arena_verdicts", "alpaca_preferences",
)  # fmt: skip


def write_batch(
    batch: list[dict],
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
        correct, score, stats = None, None, {}  # a graded-only question has its grades alone
        if state["verified"]:
            assert verifier is not None  # checked by the config schema
            correct = verify_answers(verifier, state["turns"], state["model_answers"])
        elif state["arena_hard"]:
            score, stats = (
                _arena_score(state["arena_verdicts"]),
                _arena_stats(state["arena_verdicts"]),
            )
        elif state["alpaca_eval"]:
            preferences = state["alpaca_preferences"]
            score = model_score([p["preference"] for p in preferences])
            stats = _alpaca_stats(preferences)
        elif state["judged"]:
            [comparison] = pair_comparisons(state, [PAIR], rules)
            score, stats = comparison.score_i, judgment_stats(state, [PAIR], rules)
        rows.append(
            {
                **{key: state[key] for key in _STATE_COLUMNS},
                "score": score,
                "stats": json.dumps(stats | _length_stats(state)),
                "correct": correct,
            }
        )
        judgments += [audit_row(state, j) for j in state["judgments"]]
    audit.write_shard(judgments, judgment_schema())
    stage.write_shard(rows, question_schema())
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
        ]
    )
