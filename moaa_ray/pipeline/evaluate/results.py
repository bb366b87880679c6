"""``results.json``'s figures from the evaluation stage's rows, per benchmark: win rates, the
length-controlled win rate, Bradley-Terry and Arena-Hard scores, MT-Bench grades, verified accuracy.

They read the written rows, never the question states, so the figures of a finished stage can be
recomputed from its parquet files.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from moaa_ray.core.arena_hard import (
    answer_length_counter,
    answer_style_counts,
    arena_hard_scores,
    battles_from_verdicts,
)
from moaa_ray.core.eval_question import ArenaVerdict, Judge
from moaa_ray.core.mt_bench import mt_bench_summary
from moaa_ray.core.verification import accuracy_interval, share
from moaa_ray.core.winrates import (
    GamedBaseline,
    LcKind,
    bootstrap_ci,
    bradley_terry_battles,
    length_controlled_win_rate,
    win_tie_loss,
)
from moaa_ray.pipeline.evaluate.rows import QuestionRow
from moaa_ray.pipeline.evaluate.sources import ACCURACY, MT_BENCH_GRADES, judged_sources


def arena_battles(
    verdicts: list[ArenaVerdict], model: str, baseline: str
) -> list[tuple[str, str, str]]:
    """A question's battles: per judge, its two games' verdicts with arena-hard-auto's weights."""
    by_judge: dict[str, dict[int, str | None]] = {}
    for v in verdicts:
        by_judge.setdefault(v["judge"], {})[v["game"]] = v["verdict"]
    return [
        battle
        for games in by_judge.values()
        for battle in battles_from_verdicts(model, baseline, games.get(1), games.get(2))
    ]


def is_scored(row: QuestionRow) -> bool:
    """Whether a written question has a result: a win score, the verifier's verdict or a grade.

    A question without one (the judges abstained, the grader gave no rating, the verifier could
    not check the answer) counts in no benchmark figure.
    """
    return (
        row["score"] is not None
        or row["correct"] is not None
        or any(grade["score"] is not None for grade in row["grades"])
    )


def verified_results(rows: list[QuestionRow], samples: int = 1) -> dict:
    """One verified benchmark's exact-match accuracy from its answered questions.

    Args:
        rows: one per answered question, with ``correct``: the verifier's True or False on the
            model's answer, or None when it could not check it, and ``sample_accuracy``: the
            share of the question's ``samples`` answers it accepts.
        samples: answers sampled per question (``evaluate.num_samples``).

    Returns:
        ``accuracy``: the mean over verifiable questions of their share of correct answers (with
        one answer each, correct / verifiable), rounded to 4 places; ``accuracy_ci``: its 95%
        interval over questions (:func:`~moaa_ray.core.verification.accuracy_interval`);
        ``samples_per_question``; ``correct`` (questions whose first answer is right),
        ``verifiable``, ``total`` (questions answered) and ``format``: ``"verified"``. The
        accuracy and interval are None when nothing was verifiable.
    """
    shares = [share for r in rows if (share := r.get("sample_accuracy")) is not None]
    accuracy, interval = None, None
    if shares:
        accuracy = round(sum(shares) / len(shares), 4)
        interval = [round(bound, 4) for bound in accuracy_interval(shares, samples)]
    return {
        "accuracy": accuracy,
        "accuracy_ci": interval,
        "samples_per_question": samples,
        "correct": sum(row["correct"] is True for row in rows),
        "verifiable": len(shares),
        "total": len(rows),
        "format": "verified",
        "sources": {"accuracy": ACCURACY},
    }


def benchmark_results(
    rows: list[QuestionRow],
    model: str,
    baseline: str | None,
    num_skipped: int,
    bootstrap_rounds: int,
    seed: int = 0,
    style_control: bool = False,
    gamed_baseline: GamedBaseline | None = None,
    style_pool: dict[str, list[QuestionRow]] | None = None,
) -> dict:
    """One benchmark's numbers from its judged questions, or its graded ones when it has no baseline.

    Args:
        rows: one per judged question: ``score`` (the model's win score against the baseline, both
            orders combined; None when the judges abstained), ``model_answers`` and
            ``baseline_answers`` (per turn; the last one was judged), ``grades`` (``{"turn",
            "score"}`` per graded turn) and ``stats`` (JSON of :func:`~moaa_ray.core.tournament.judgment_stats`).
        model: the evaluated model's name.
        baseline: the baseline's name, the Bradley-Terry anchor (score 50); None: the benchmark is
            graded only (``baseline: none``), see :func:`graded_results`.
        num_skipped: questions skipped for want of a baseline answer.
        bootstrap_rounds: resamples for the Bradley-Terry interval.
        seed: seed of the resampling (Arena-Hard rows: arena-hard-auto's 42).
        style_control: Arena-Hard rows: also the style-controlled score, fitted jointly over
            the model and ``style_pool`` (:func:`pooled_style_control`).
        gamed_baseline: AlpacaEval's ``df_gamed.csv``, for the LC win rate (:func:`_lc_results`).
        style_pool: Arena-Hard rows of the other models judged against the same baseline by the
            same judges, by name (none of them ``model``): the rest of the style-control pool.

    Returns:
        Counts and win rate (:func:`win_tie_loss`), the LC win rate (:func:`_lc_results`),
        ``bt`` (``{"score", "lower", "upper"}`` or None when nothing was decided; for rows judged
        as arena-hard-auto judges, :func:`arena_hard_results`), ``mt_bench``
        (:func:`mt_bench_summary`, or None when nothing was graded), abstain and position-bias
        rates, ``sources``: whose each figure is (:func:`~moaa_ray.pipeline.evaluate.sources.judged_sources`),
        Arena-Hard judgments the judge was asked to continue (``judge_retries``), questions judged
        in one A/B order only (``single_order_pairs``: under the default
        order policy they abstain) and orders the judges' mean decided for an abstaining aggregator
        judge (``aggregator_fallbacks``), and answers cut at ``max_new_tokens`` per side
        (``truncated_answers``: judged as written, as the benchmarks do) and prompts whose parts
        were cut to fit a context window (``shortened_prompts``). NaN is written as None.
    """
    if baseline is None:
        return graded_results(rows)
    scores = [row["score"] for row in rows]
    result: dict = {"baseline": baseline, "judged": len(rows), "skipped_no_baseline": num_skipped}
    result.update(win_tie_loss(scores))
    result.update(_lc_results(rows, gamed_baseline))
    battles = [(model, baseline, score) for score in scores if score is not None]
    result["bt"] = None
    if any(row.get("arena_verdicts") for row in rows):
        pool = {**(style_pool or {}), model: rows} if style_control else None
        result["bt"] = arena_hard_results(rows, model, baseline, bootstrap_rounds, pool)
    elif battles:
        point = bradley_terry_battles(battles, baseline)[model]
        _, lower, upper = bootstrap_ci(battles, baseline, bootstrap_rounds, seed)[model]
        result["bt"] = {"score": point, "lower": lower, "upper": upper}
    result["mt_bench"] = _mt_bench(rows)
    result["sources"] = judged_sources(
        _judge_of_rows(rows),
        result["lc_win_rate_kind"],
        bool(result["bt"] and result["bt"].get("style_controlled")),
        result["mt_bench"] is not None,
    )
    totals = _stat_totals(rows)
    result["abstain_rate"] = share(totals["abstains"], totals["judgments"])
    result["judge_retries"] = totals["retries"]
    result["position_bias_rate"] = share(totals["position_flips"], totals["pairs"])
    result["single_order_pairs"] = totals["single_order_pairs"]
    result["aggregator_fallbacks"] = totals["aggregator_fallbacks"]
    result["truncated_answers"] = {
        "model": totals["truncated_model_answers"],
        "baseline": totals["truncated_baseline_answers"],
    }
    result["shortened_prompts"] = totals["shortened_prompts"]
    return _json_safe(result)


def _judge_of_rows(rows: list[QuestionRow]) -> Judge:
    """Who judged a benchmark's rows: arena-hard-auto's judging, AlpacaEval's or the ensemble."""
    if any(row.get("arena_verdicts") for row in rows):
        return "arena_hard"
    if any(row.get("alpaca_preferences") for row in rows):
        return "alpaca_eval"
    return "ensemble"


def _lc_results(rows: list[QuestionRow], gamed_baseline: GamedBaseline | None) -> dict:
    """The AlpacaEval 2 LC win rate of judged questions, and whether it is the leaderboard's.

    Args:
        rows: judged questions, as for :func:`benchmark_results`; answer lengths in characters.
        gamed_baseline: AlpacaEval's ``df_gamed.csv``; its difficulties are looked up by
            ``question_id``, the position in AlpacaEval's 805 instructions.

    Returns:
        ``lc_win_rate``; ``lc_win_rate_kind``: ``length_controlled_v1`` (alpaca_eval 0.6.6's, with
        the gamed baseline and every question's difficulty) or ``fallback``; and
        ``lc_win_rate_fallback_reason``: why it is a fallback (None when it is not).
    """
    reason = _lc_fallback_reason(rows, gamed_baseline)
    difficulty, gamed = None, None
    if gamed_baseline is not None and reason is None:
        difficulty = [gamed_baseline.difficulty[row["question_id"]] for row in rows]
        gamed = gamed_baseline.comparisons
    lc = length_controlled_win_rate(
        [row["score"] for row in rows],
        [len(row["model_answers"][-1]) for row in rows],
        [len(row["baseline_answers"][-1]) for row in rows],
        instruction_difficulty=difficulty,
        gamed_baseline=gamed,
    )
    kind: LcKind = "length_controlled_v1" if reason is None else "fallback"
    return {"lc_win_rate": lc, "lc_win_rate_kind": kind, "lc_win_rate_fallback_reason": reason}


def _lc_fallback_reason(
    rows: list[QuestionRow], gamed_baseline: GamedBaseline | None
) -> str | None:
    """Why the LC win rate of ``rows`` cannot be alpaca_eval's ``length_controlled_v1``; None
    when it can."""
    if gamed_baseline is None:
        return (
            "no gamed_baseline_path (AlpacaEval's df_gamed.csv), so every instruction difficulty "
            "is 0 and neutral ties stand in for its gamed-baseline annotations"
        )
    unknown = [
        row["question_id"] for row in rows if row["question_id"] not in gamed_baseline.difficulty
    ]
    if unknown:
        return (
            f"the gamed baseline has no instruction difficulty for {len(unknown)} of {len(rows)} "
            f"questions (first {unknown[:3]}): it has AlpacaEval's 805 instructions by position"
        )
    return None


def graded_results(rows: list[QuestionRow]) -> dict:
    """One graded-only MT-Bench benchmark's numbers (``baseline: none``): FastChat's single
    grading, nothing compared, so no win rate, BT score or judge rates.

    Args:
        rows: one per answered question: ``grades`` (``{"turn", "category", "score"}`` per graded
            turn) and ``stats`` (JSON of the answers and prompts cut).

    Returns:
        ``baseline`` (None), ``graded`` (questions answered), ``mt_bench`` (:func:`mt_bench_summary`
        per turn, category and overall, or None when nothing was graded), the model's answers cut
        at ``max_new_tokens`` (``truncated_answers``) and prompts cut to fit a context window
        (``shortened_prompts``). NaN is written as None.
    """
    totals = _stat_totals(rows)
    result = {
        "baseline": None,
        "graded": len(rows),
        "mt_bench": _mt_bench(rows),
        "truncated_answers": {"model": totals["truncated_model_answers"]},
        "shortened_prompts": totals["shortened_prompts"],
        "sources": {"mt_bench": MT_BENCH_GRADES},
    }
    return _json_safe(result)


def _mt_bench(rows: list[QuestionRow]) -> dict | None:
    """The MT-Bench summary of the rows' grades; None when nothing was graded."""
    grades = [grade for row in rows for grade in row["grades"]]
    return mt_bench_summary(grades) if grades else None


def _stat_totals(rows: list[QuestionRow]) -> Counter:
    """The rows' per-question stats (judgments, abstains, cut answers and prompts...) summed."""
    totals: Counter = Counter()
    for row in rows:
        totals.update(json.loads(row["stats"]))
    return totals


ARENA_HARD_SEED = 42  # arena-hard-auto seeds its bootstrap with 42


def arena_hard_results(
    rows: list[QuestionRow],
    model: str,
    baseline: str,
    bootstrap_rounds: int,
    style_pool: dict[str, list[QuestionRow]] | None = None,
) -> dict | None:
    """The model's Arena-Hard score against the baseline with its 95% interval, as arena-hard-auto.

    Args:
        rows: the model's judged questions.
        model: its name.
        baseline: the baseline's name.
        bootstrap_rounds: resamples for the intervals.
        style_pool: with style control, the rows of every model in the style-control pool by name,
            ``model``'s included (:func:`pooled_style_control`); None: no style control.

    Returns:
        ``{"score", "lower", "upper", "method"}`` and :func:`pooled_style_control`'s keys, with
        ``style_controlled``: the model's own style-controlled score (all None without style
        control); None with no decided battle.
    """
    battles = [
        battle
        for row in rows
        for battle in arena_battles(row.get("arena_verdicts") or [], model, baseline)
    ]
    if not battles:
        return None
    plain = arena_hard_scores(battles, baseline, bootstrap_rounds, ARENA_HARD_SEED)[model]
    result = {**plain, "method": "arena-hard-auto v0.1"}
    if style_pool is None:
        keys = ("style_controlled", "style_control_pool", "style_controlled_by_model")
        return result | dict.fromkeys(keys) | {"style_length_unit": None}
    pooled = pooled_style_control(style_pool, baseline, bootstrap_rounds)
    return result | {"style_controlled": pooled["style_controlled_by_model"][model]} | pooled


def pooled_style_control(
    pool: dict[str, list[QuestionRow]], baseline: str, bootstrap_rounds: int
) -> dict:
    """Style-controlled Arena-Hard scores of every model in a pool, fitted jointly as the leaderboard
    fits them.

    arena-hard-auto's ``show_result.py --style-control`` turns the judgments of every model its
    judge judged against the baseline into one battle list and fits one logistic regression on it:
    a coefficient per model and one per style feature (the normalised difference of the baseline's
    and the model's answer length and markdown header, list and bold counts), each feature
    standardised over all the pool's battles, with one bootstrap over them. A model's score is thus
    relative to the whole pool: the same answers score differently in another pool.

    Args:
        pool: each model's judged Arena-Hard rows, by name; the battles are listed in this order.
        baseline: the baseline's name, which no pooled model may have.
        bootstrap_rounds: resamples for the intervals.

    Returns:
        ``style_controlled_by_model``: ``{name: {"score", "lower", "upper"}}`` (None for a model
        without a decided battle, and for all when no style feature varies: it cannot be fitted),
        ``style_control_pool``: the pool's names in order, and ``style_length_unit``: what lengths
        were counted in (:func:`answer_length_counter`: arena-hard-auto's tiktoken tokens, else
        words).

    Raises:
        ValueError: when a pooled model has the baseline's name.
    """
    if baseline in pool:
        raise ValueError(f"the style-control pool names the baseline {baseline!r} as a model")
    count, unit = answer_length_counter()
    battles, styles = [], []
    for name, rows in pool.items():
        for row in rows:
            found = arena_battles(row.get("arena_verdicts") or [], name, baseline)
            answers = (row["baseline_answers"][-1], row["model_answers"][-1])
            battles += found
            styles += [[answer_style_counts(a, count(a)) for a in answers]] * len(found)
    scores: dict = {}
    varying = _varying_features(styles) if styles else []
    if varying:  # a feature no battle varies in (e.g. no markdown anywhere) cannot be fitted
        features = [[[side[k] for k in varying] for side in style] for style in styles]
        scores = arena_hard_scores(
            battles, baseline, bootstrap_rounds, ARENA_HARD_SEED, style_features=features
        )
    return {
        "style_controlled_by_model": {name: scores.get(name) for name in pool},
        "style_control_pool": list(pool),
        "style_length_unit": unit,
    }


def _varying_features(styles: list) -> list[int]:
    """Indices of the style features whose normalised difference varies across battles."""
    diffs = [[(a - b) / (a + b + 1) for a, b in zip(*style, strict=True)] for style in styles]
    return [k for k in range(len(diffs[0])) if len({d[k] for d in diffs}) > 1]


def _json_safe(value):
    """NaN as None and keys as strings, so results read the same from memory and from JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
