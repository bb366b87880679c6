"""Evaluation statistics: win rates, length control, Bradley-Terry scores, MT-Bench grades.

These are the numbers MoAA (arXiv 2505.03059) reports against a baseline: AlpacaEval-2 length-controlled
win rate, Arena-Hard Bradley-Terry score with a bootstrap interval, and MT-Bench 1-10 grades. A score
is always from the evaluated model's side: 1 = it wins, 0.5 = tie, 0 = it loses, None = judge abstained.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence

from moaa_ray.core.ranking import Comparison, bradley_terry
from moaa_ray.core.templates import render_template

Battle = tuple[str, str, float]

_GRADE_PATTERN = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_GRADE_FALLBACK = re.compile(r"rating:\s*\[?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _check_score(score: float, where: str) -> None:
    if not 0.0 <= score <= 1.0:
        raise ValueError(
            f"{where}: score must be in [0, 1] (1 win, 0.5 tie, 0 loss), got {score!r}"
        )


def win_tie_loss(scores: Sequence[float | None]) -> dict:
    """Count wins, ties, losses and abstentions, and the win rate with ties as half a win.

    Args:
        scores: one judged comparison each, from the model's side: 1 win, 0.5 tie, 0 loss, None abstain.
            Other values in (0, 1) count as wins above 0.5 and losses below, at their face value in
            the win rate.

    Returns:
        ``{"wins", "ties", "losses", "abstained", "win_rate"}``; ``win_rate`` is the mean score of the
        decided comparisons in percent (NaN when every judge abstained).
    """
    counts = {"wins": 0, "ties": 0, "losses": 0, "abstained": 0}
    total = 0.0
    for index, score in enumerate(scores):
        if score is None:
            counts["abstained"] += 1
            continue
        _check_score(score, f"scores[{index}]")
        key = "wins" if score > 0.5 else "ties" if score == 0.5 else "losses"
        counts[key] += 1
        total += score
    decided = len(scores) - counts["abstained"]
    return {**counts, "win_rate": 100.0 * total / decided if decided else math.nan}


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _logistic_loss(
    weights: tuple[float, float], xs: list[float], ys: list[float], l2: float
) -> float:
    theta, phi = weights
    loss = 0.5 * l2 * (theta * theta + phi * phi)
    for x, y in zip(xs, ys, strict=True):
        z = theta + phi * x
        # log(1 + e^z) - y*z, written to stay finite for large |z|
        loss += max(z, 0.0) + math.log1p(math.exp(-abs(z))) - y * z
    return loss


def _fit_logistic_2d(xs: list[float], ys: list[float], l2: float) -> tuple[float, float]:
    """Fit sigmoid(theta + phi * x) to fractional targets by damped Newton steps with an L2 penalty."""
    weights = (0.0, 0.0)
    loss = _logistic_loss(weights, xs, ys, l2)
    for _ in range(100):
        theta, phi = weights
        g0, g1 = l2 * theta, l2 * phi
        h00, h01, h11 = l2, 0.0, l2
        for x, y in zip(xs, ys, strict=True):
            p = _sigmoid(theta + phi * x)
            g0 += p - y
            g1 += (p - y) * x
            w = p * (1.0 - p)
            h00, h01, h11 = h00 + w, h01 + w * x, h11 + w * x * x
        det = h00 * h11 - h01 * h01
        step = ((h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det)
        scale = 1.0
        while scale > 1e-8:  # halve the step until the loss does not increase
            candidate = (theta - scale * step[0], phi - scale * step[1])
            new_loss = _logistic_loss(candidate, xs, ys, l2)
            if new_loss <= loss:
                break
            scale /= 2
        else:
            return weights
        weights, converged = candidate, loss - new_loss < 1e-12
        loss = new_loss
        if converged:
            break
    return weights


def length_controlled_win_rate(
    scores: Sequence[float | None],
    model_lengths: Sequence[int | float],
    baseline_lengths: Sequence[int | float],
    l2: float = 1e-3,
) -> float:
    """AlpacaEval-2-style length-controlled win rate (Dubois et al. 2024, arXiv 2404.04475).

    Fits ``P(model wins) = sigmoid(theta + phi * tanh(d / std(d)))`` with ``d = len_model - len_baseline``
    by logistic regression (ties as fractional targets, small L2 penalty so all-win or all-loss data stay
    finite), then reports the win rate with the length term zeroed: ``100 * sigmoid(theta)``. AlpacaEval's
    per-instruction difficulty term is omitted: with one model pair it is absorbed by ``theta``.

    Args:
        scores: judged comparisons from the model's side (1 win, 0.5 tie, 0 loss, None abstain; abstained
            comparisons are dropped).
        model_lengths: length of the model's answer (characters or tokens) per comparison.
        baseline_lengths: length of the baseline's answer per comparison, in the same unit.
        l2: L2 penalty on ``theta`` and ``phi``.

    Returns:
        The length-controlled win rate in percent; NaN when no comparison was decided.
    """
    if not len(scores) == len(model_lengths) == len(baseline_lengths):
        raise ValueError(
            f"scores, model_lengths and baseline_lengths differ in length: "
            f"{len(scores)}, {len(model_lengths)}, {len(baseline_lengths)}"
        )
    ys: list[float] = []
    deltas: list[float] = []
    for index, (score, len_m, len_b) in enumerate(
        zip(scores, model_lengths, baseline_lengths, strict=True)
    ):
        if score is not None:
            _check_score(score, f"scores[{index}]")
            ys.append(float(score))
            deltas.append(float(len_m) - float(len_b))
    if not ys:
        return math.nan
    std = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
    xs = [math.tanh(d / std) if std > 0 else 0.0 for d in deltas]
    theta, _ = _fit_logistic_2d(xs, ys, l2)
    return 100.0 * _sigmoid(theta)


def _connected_models(battles: Sequence[Battle], anchor: str) -> set[str]:
    neighbours: dict[str, set[str]] = defaultdict(set)
    for model_a, model_b, _ in battles:
        neighbours[model_a].add(model_b)
        neighbours[model_b].add(model_a)
    seen, frontier = {anchor}, [anchor]
    while frontier:
        for other in neighbours[frontier.pop()] - seen:
            seen.add(other)
            frontier.append(other)
    return seen if anchor in neighbours else set()


def _fit_bt_scores(battles: Sequence[Battle], anchor: str, anchor_score: float) -> dict[str, float]:
    """Bradley-Terry scores of the models connected to ``anchor`` (none when it is absent)."""
    models = sorted(_connected_models(battles, anchor))
    if not models:
        return {}
    index = {model: i for i, model in enumerate(models)}
    comparisons = [Comparison(index[a], index[b], s) for a, b, s in battles if a in index]
    # One virtual tie per pair keeps unbeaten or winless models at a finite strength.
    log_strengths = bradley_terry(comparisons, len(models), iterations=10_000, prior=1.0)
    offset = math.log(anchor_score / (100.0 - anchor_score)) - log_strengths[index[anchor]]
    scores = {m: 100.0 * _sigmoid(log_strengths[index[m]] + offset) for m in models}
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def bradley_terry_battles(
    battles: Sequence[Battle], anchor: str, anchor_score: float = 50.0
) -> dict[str, float]:
    """Arena-Hard-style scores: Bradley-Terry strengths as win rates against the anchor model.

    Args:
        battles: ``(model_a, model_b, score_a)`` with ``score_a`` 1 when a wins, 0.5 tie, 0 when b wins.
            Arena-Hard judges each question in both orders; pass both as separate battles.
        anchor: the baseline model every score is relative to.
        anchor_score: the anchor's own score in percent; the default 50 makes every score the model's
            predicted win rate against the anchor, as Arena-Hard reports it.

    Returns:
        Score in percent per model, best first.

    Raises:
        ValueError: on a bad battle, a missing anchor, or a model with no chain of battles to the anchor.
    """
    if not 0.0 < anchor_score < 100.0:
        raise ValueError(f"anchor_score must be in (0, 100), got {anchor_score!r}")
    models: set[str] = set()
    for index, (model_a, model_b, score_a) in enumerate(battles):
        _check_score(score_a, f"battles[{index}]")
        if model_a == model_b:
            raise ValueError(f"battles[{index}]: {model_a!r} battles itself")
        models.update((model_a, model_b))
    if anchor not in models:
        raise ValueError(f"anchor model {anchor!r} has no battles")
    unreachable = models - _connected_models(battles, anchor)
    if unreachable:
        raise ValueError(f"models with no chain of battles to {anchor!r}: {sorted(unreachable)}")
    return _fit_bt_scores(battles, anchor, anchor_score)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an ascending list."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (position - low) * (sorted_values[high] - sorted_values[low])


def bootstrap_ci(
    battles: Sequence[Battle],
    anchor: str,
    num_rounds: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float, float]]:
    """Bootstrap confidence intervals of :func:`bradley_terry_battles` scores, as Arena-Hard reports.

    Args:
        battles: ``(model_a, model_b, score_a)`` battles, as for :func:`bradley_terry_battles`.
        anchor: the baseline model (score 50).
        num_rounds: bootstrap resamples of the battles (with replacement).
        seed: seed of the ``random.Random`` that draws the resamples; same seed, same intervals.
        alpha: one minus the interval's coverage (0.05 gives the 2.5th to 97.5th percentile).

    Returns:
        ``(median, lower, upper)`` per model over the resamples, best median first; a resample that
        leaves a model without a chain of battles to the anchor skips that model.
    """
    if num_rounds < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need num_rounds >= 1 and 0 < alpha < 1, got {num_rounds}, {alpha}")
    samples: dict[str, list[float]] = {m: [] for m in bradley_terry_battles(battles, anchor)}
    rng = random.Random(seed)
    for _ in range(num_rounds):
        resample = rng.choices(battles, k=len(battles))
        for model, score in _fit_bt_scores(resample, anchor, 50.0).items():
            samples[model].append(score)
    intervals: dict[str, tuple[float, float, float]] = {}
    for model, values in samples.items():
        if not values:
            raise ValueError(f"{model!r} missing from every resample; raise num_rounds")
        values.sort()
        intervals[model] = (
            _quantile(values, 0.5),
            _quantile(values, alpha / 2),
            _quantile(values, 1 - alpha / 2),
        )
    return dict(sorted(intervals.items(), key=lambda item: -item[1][0]))


def mt_bench_summary(grades: Sequence[dict]) -> dict:
    """Mean MT-Bench 1-10 grade per turn and overall.

    Args:
        grades: one per graded answer turn, with ``"turn"`` (1-based int) and ``"score"``
            (float, or None when the judge gave no parsable grade).

    Returns:
        ``{"per_turn": {turn: mean}, "overall": mean of all grades, "num_graded", "num_missing"}``;
        means are NaN when nothing was graded.
    """
    per_turn: dict[int, list[float]] = defaultdict(list)
    missing = 0
    for index, grade in enumerate(grades):
        if "turn" not in grade or "score" not in grade:
            raise ValueError(f"grades[{index}] needs 'turn' and 'score' keys, got {sorted(grade)}")
        if grade["score"] is None:
            missing += 1
        else:
            per_turn[int(grade["turn"])].append(float(grade["score"]))
    every = [score for scores in per_turn.values() for score in scores]
    return {
        "per_turn": {turn: statistics.fmean(per_turn[turn]) for turn in sorted(per_turn)},
        "overall": statistics.fmean(every) if every else math.nan,
        "num_graded": len(every),
        "num_missing": missing,
    }


def parse_grade(text: str) -> float | None:
    """Read an MT-Bench single grade such as ``Rating: [[7]]`` or ``[[7.5]]`` from a judge's output.

    Args:
        text: the judge's completion.

    Returns:
        The last ``[[N]]`` (or, failing that, ``Rating: N``) clamped to 1..10; None when there is none.
    """
    matches = _GRADE_PATTERN.findall(text) or _GRADE_FALLBACK.findall(text)
    if not matches:
        return None
    return min(10.0, max(1.0, float(matches[-1])))


def render_grade_prompt(
    question_turns: Sequence[str], answer_turns: Sequence[str], reference: str | None = None
) -> list[dict]:
    """Build the MT-Bench single-grading request for an answer's last turn.

    Args:
        question_turns: user turns so far; earlier turns are shown as conversation context.
        answer_turns: the model's answer to each user turn (same count).
        reference: optional reference answer to the last turn (MT-Bench math, reasoning, coding).

    Returns:
        Chat messages (one user message, so judges without a system role work too).
    """
    if not question_turns or len(question_turns) != len(answer_turns):
        raise ValueError(
            f"need as many answers as questions (at least one), got "
            f"{len(question_turns)} questions and {len(answer_turns)} answers"
        )
    if len(question_turns) == 1:
        question = question_turns[0]
    else:
        history = [
            f"### User:\n{q}\n\n### Assistant:\n{a}"
            for q, a in zip(question_turns[:-1], answer_turns[:-1], strict=True)
        ]
        question = "\n\n".join([*history, f"### User:\n{question_turns[-1]}"])
    reference_block = (
        f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
        if reference is not None
        else ""
    )
    content = render_template(
        "grade_single.txt", question=question, answer=answer_turns[-1], reference=reference_block
    )
    return [{"role": "user", "content": content}]


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
