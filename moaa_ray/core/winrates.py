"""Evaluation statistics: win rates, the AlpacaEval 2 length-controlled win rate, Bradley-Terry scores.

These are the numbers MoAA (arXiv 2505.03059) reports against a baseline. A score is always from the
evaluated model's side: 1 = it wins, 0.5 = tie, 0 = it loses, None = judge abstained. Arena-Hard's
own scoring is in :mod:`moaa_ray.core.arena_hard`, MT-Bench grading in :mod:`moaa_ray.core.mt_bench`.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from moaa_ray.core.ranking import Comparison, bradley_terry

Battle = tuple[str, str, float]


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


GamedComparison = tuple[float, float, float]
"""An AlpacaEval gamed-baseline row: ``(preference, std_delta_len, instruction_difficulty)``."""

_GLM_CS = np.logspace(-4.0, 4.0, 10)  # LogisticRegressionCV(Cs=10)
_GLM_FOLDS = 5
_GLM_C_WITHOUT_CV = 100.0  # alpaca_eval's C when it does not cross-validate
_LOG_LOSS_CLIP = 1e-15


def _logistic(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.exp(-np.logaddexp(0.0, -z))


def _glm_objective(
    w: NDArray[np.float64],
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
    c: float,
) -> float:
    z = features @ w
    cross_entropy = targets * np.logaddexp(0.0, -z) + (1.0 - targets) * np.logaddexp(0.0, z)
    return float(np.abs(w).sum() + c * (weights @ cross_entropy))


def _l1_quadratic_minimum(
    hessian: NDArray[np.float64], linear: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``argmin_u u.H.u / 2 + linear.u + |u|_1``, exactly, by trying every sign pattern of ``u``."""
    best, best_value = np.zeros(len(linear)), 0.0
    for signs in itertools.product((-1.0, 0.0, 1.0), repeat=len(linear)):
        sign = np.array(signs)
        support = np.flatnonzero(sign)
        if not support.size:
            continue
        try:
            values = np.linalg.solve(
                hessian[np.ix_(support, support)], -(linear[support] + sign[support])
            )
        except np.linalg.LinAlgError:
            continue
        value = 0.5 * float((linear[support] + sign[support]) @ values)
        if np.all(np.sign(values) == sign[support]) and value < best_value:
            best, best_value = np.zeros(len(linear)), value
            best[support] = values
    return best


def _fit_l1_logistic(
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
    c: float,
) -> NDArray[np.float64]:
    """Minimise ``|w|_1 + c * sum_i weights_i * CE(targets_i, sigmoid(features_i . w))``.

    This is what liblinear minimises for sklearn's ``LogisticRegression(penalty="l1",
    solver="liblinear", fit_intercept=False)`` when each row is fitted twice, as label 1 with sample
    weight ``weights * targets`` and as label 0 with ``weights * (1 - targets)`` (alpaca_eval's
    continuous-target trick). Solved to machine precision by proximal Newton steps, each quadratic
    model minimised exactly, with backtracking.
    """
    w = np.zeros(features.shape[1])
    objective = _glm_objective(w, features, targets, weights, c)
    for _ in range(100):
        p = _logistic(features @ w)
        gradient = c * features.T @ (weights * (p - targets))
        hessian = c * (features.T * (weights * p * (1.0 - p))) @ features
        step = _l1_quadratic_minimum(hessian, gradient - hessian @ w) - w
        decrease = float(gradient @ step + np.abs(w + step).sum() - np.abs(w).sum())
        if decrease >= -1e-15 * max(1.0, abs(objective)):
            break
        scale = 1.0
        candidate = w + step
        new_objective = _glm_objective(candidate, features, targets, weights, c)
        while new_objective > objective + 1e-4 * scale * decrease and scale > 1e-10:
            scale /= 2.0
            candidate = w + scale * step
            new_objective = _glm_objective(candidate, features, targets, weights, c)
        if new_objective > objective:
            break
        w, objective = candidate, new_objective
    return w


def _glm_cv_score(
    w: NDArray[np.float64],
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> float:
    """alpaca_eval's ``logloss_continuous`` scorer: minus the weighted mean log loss, clipped."""
    p = np.clip(_logistic(features @ w), _LOG_LOSS_CLIP, 1.0 - _LOG_LOSS_CLIP)
    return float(np.mean(weights * (targets * np.log(p) + (1.0 - targets) * np.log(1.0 - p))))


def _fit_glm(
    features: NDArray[np.float64], targets: NDArray[np.float64], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """alpaca_eval's ``fit_LogisticRegressionCV``: L1 logistic regression, ``C`` picked by 5-fold CV.

    Row ``i`` of ``n`` is in fold ``(n - 1 - i) % 5``, as sklearn 1.9's ``GroupKFold`` puts one
    group per row; the ``C`` of ``logspace(-4, 4, 10)`` with the best summed fold score wins (the
    first on a tie) and is refitted on every row. Where alpaca_eval raises instead, fewer than 5
    rows get one fold per row and a single row gets ``C = 100``, its ``C`` without cross-validation.
    """
    n_rows = len(targets)
    if n_rows < 2:
        return _fit_l1_logistic(features, targets, weights, _GLM_C_WITHOUT_CV)
    folds = (n_rows - 1 - np.arange(n_rows)) % min(_GLM_FOLDS, n_rows)
    totals = np.zeros(len(_GLM_CS))
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        for index, c in enumerate(_GLM_CS):
            w = _fit_l1_logistic(features[train], targets[train], weights[train], float(c))
            totals[index] += _glm_cv_score(w, features[test], targets[test], weights[test])
    return _fit_l1_logistic(features, targets, weights, float(_GLM_CS[np.argmax(totals)]))


def _glm_rows(
    length_terms: Sequence[float],
    difficulties: Sequence[float],
    is_model: float,
    targets: Sequence[float],
    weight: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Features ``(tanh(length term), difficulty, is_model)``, targets and weights of a block."""
    features = np.column_stack(
        [np.tanh(length_terms), difficulties, np.full(len(targets), is_model)]
    )
    return features, np.asarray(targets, dtype=float), np.full(len(targets), weight)


def length_controlled_win_rate(
    scores: Sequence[float | None],
    model_lengths: Sequence[int | float],
    baseline_lengths: Sequence[int | float],
    instruction_difficulty: Sequence[float] | None = None,
    gamed_baseline: Sequence[GamedComparison] | None = None,
    regularize_to_baseline_lambda: float = 0.2,
) -> float:
    """AlpacaEval 2 length-controlled win rate: alpaca_eval 0.6.6's ``length_controlled_v1`` GLM.

    Dubois et al. 2024 (arXiv 2404.04475), ``alpaca_eval/metrics/glm_winrate.py``. With
    ``d_i = (len_baseline_i - len_model_i) / std(d)`` (sample std over every comparison), it fits
    ``P(model wins i) = sigmoid(phi * tanh(d_i) + psi * difficulty_i + gamma)`` (no other intercept;
    a tie is target 0.5) jointly with gamed-baseline rows ``sigmoid(phi * tanh(d_j) + psi *
    difficulty_j)`` at sample weight ``lambda / 2`` each. Those share ``phi`` and ``psi``, so the
    length slope is pulled to the baseline's own ("regularize to baseline"). The fit is L1 logistic
    regression with ``C`` chosen by 5-fold cross-validation (:func:`_fit_glm`) over the gamed rows,
    then the decided comparisons, in that order as in alpaca_eval (the folds depend on it). It
    returns ``100 * mean_i sigmoid(psi * difficulty_i + gamma)`` over every comparison: the win rate
    predicted with no length difference. Where ``std(d)`` is zero or undefined, alpaca_eval divides
    by it; here the length term is then 0.

    Args:
        scores: judged comparisons from the model's side (1 win, 0.5 tie, 0 loss, None abstain).
            Abstained comparisons are left out of the fit, as alpaca_eval drops NaN preferences, and
            as there still count in ``std(d)`` and in the final mean.
        model_lengths: length of the model's answer (characters, as in AlpacaEval) per comparison.
        baseline_lengths: length of the baseline's answer per comparison, in the same unit.
        instruction_difficulty: AlpacaEval's difficulty of each comparison's instruction
            (:attr:`GamedBaseline.difficulty`). None: 0 for every comparison, so the result is
            ``100 * sigmoid(gamma)``.
        gamed_baseline: AlpacaEval's gamed-baseline annotations (:attr:`GamedBaseline.comparisons`);
            they describe its own baseline and annotator only. Given with the difficulties, the
            result is alpaca_eval's ``length_controlled_v1``. None: a fallback, which is not; a
            neutral stand-in, for each decided comparison a tie at length term ``d_i`` and, after
            all of those, one at ``-d_i``, both with difficulty 0. Ties at any length gap pull
            ``phi`` toward 0 with total weight ``lambda`` per comparison, which keeps ``gamma``
            identifiable when every length gap has the same sign.
        regularize_to_baseline_lambda: ``lambda``; 0 fits the model's comparisons alone, as
            alpaca_eval's ``length_controlled_noreg``.

    Returns:
        The length-controlled win rate in percent; NaN when no comparison was decided.
    """
    if not len(scores) == len(model_lengths) == len(baseline_lengths):
        raise ValueError(
            f"scores, model_lengths and baseline_lengths differ in length: "
            f"{len(scores)}, {len(model_lengths)}, {len(baseline_lengths)}"
        )
    if instruction_difficulty is not None and len(instruction_difficulty) != len(scores):
        raise ValueError(
            f"instruction_difficulty has {len(instruction_difficulty)} values for "
            f"{len(scores)} comparisons"
        )
    if regularize_to_baseline_lambda < 0:
        raise ValueError(
            f"regularize_to_baseline_lambda must be >= 0, got {regularize_to_baseline_lambda!r}"
        )
    targets: list[float] = []
    for index, score in enumerate(scores):
        if score is not None:
            _check_score(score, f"scores[{index}]")
            targets.append(float(score))
    if not targets:
        return math.nan
    decided = [index for index, score in enumerate(scores) if score is not None]
    difficulty = np.zeros(len(scores))
    if instruction_difficulty is not None:
        difficulty = np.asarray(instruction_difficulty, dtype=float)
    deltas = [float(b) - float(m) for m, b in zip(model_lengths, baseline_lengths, strict=True)]
    std = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
    length_terms = [deltas[i] / std if std > 0 else 0.0 for i in decided]
    blocks = [_glm_rows(length_terms, difficulty[decided].tolist(), 1.0, targets, 1.0)]
    if regularize_to_baseline_lambda > 0:
        weight = regularize_to_baseline_lambda / 2
        if gamed_baseline is None:
            mirrored = length_terms + [-term for term in length_terms]
            zeros = [0.0] * len(mirrored)
            gamed = _glm_rows(mirrored, zeros, 0.0, [0.5] * len(mirrored), weight)
        else:
            for index, (preference, _, _) in enumerate(gamed_baseline):
                _check_score(preference, f"gamed_baseline[{index}]")
            length, difficulties = [r[1] for r in gamed_baseline], [r[2] for r in gamed_baseline]
            gamed = _glm_rows(length, difficulties, 0.0, [r[0] for r in gamed_baseline], weight)
        blocks.insert(0, gamed)
    features, fit_targets, weights = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    _, psi, gamma = _fit_glm(features, fit_targets, weights)
    return 100.0 * float(np.mean(_logistic(psi * difficulty + gamma)))


_GAMED_BASELINE_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty")
"""The columns of AlpacaEval's ``df_gamed.csv`` that its ``length_controlled_v1`` reads."""

LcKind = Literal["length_controlled_v1", "fallback"]
"""What an LC win rate is: alpaca_eval's ``length_controlled_v1``, which needs AlpacaEval's gamed
baseline (:func:`load_gamed_baseline`), or the fallback computed without it."""

LC_FALLBACK_LABEL = "LC (fallback: not comparable with the AlpacaEval leaderboard)"


@dataclass(frozen=True)
class GamedBaseline:
    """AlpacaEval's ``df_gamed.csv``: what ``length_controlled_v1`` reads besides the judgments.

    Attributes:
        comparisons: its rows with a preference, in file order, for ``gamed_baseline`` of
            :func:`length_controlled_win_rate`.
        difficulty: each instruction's difficulty by its ``index`` as written: its position in
            AlpacaEval's 805-instruction evaluation set (an AlpacaEval ``question_id``), from the
            instruction's first row. alpaca_eval takes that row too but looks it up by its place
            in the file: the same where the file lists instructions' first rows first, in order.
    """

    comparisons: list[GamedComparison]
    difficulty: dict[str, float]


def load_gamed_baseline(path: str | Path) -> GamedBaseline:
    """Read AlpacaEval's gamed-baseline annotations and instruction difficulties.

    The file is ``df_gamed.csv`` in the Hugging Face dataset repository ``tatsu-lab/alpaca_eval``,
    which alpaca_eval 0.6.6 downloads in ``glm_winrate._get_featurized_data`` (the pip package does
    not ship it): its baseline prompted to be verbose, and to be concise, judged against itself. It
    uses the columns ``preference`` (in [0, 1], from the gamed output's side), ``std_delta_len``
    (already standardised) and ``instruction_difficulty`` as they are, in file order, drops rows
    without a preference from the fit, and takes each instruction's difficulty from the first row
    of its ``index``.

    Args:
        path: the CSV file.

    Returns:
        The rows with a preference as ``(preference, std_delta_len, instruction_difficulty)``, and
        the difficulty per instruction.

    Raises:
        ValueError: naming the file: a column alpaca_eval reads is missing or a value is no number.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _GAMED_BASELINE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: no column {', '.join(missing)}; AlpacaEval's df_gamed.csv has "
                f"{', '.join(_GAMED_BASELINE_COLUMNS)}"
            )
        rows = list(reader)
    try:
        difficulty: dict[str, float] = {}
        for row in rows:
            difficulty.setdefault(row["index"].strip(), float(row["instruction_difficulty"]))
        comparisons = [
            (
                float(row["preference"]),
                float(row["std_delta_len"]),
                float(row["instruction_difficulty"]),
            )
            for row in rows
            if row["preference"].strip() and not math.isnan(float(row["preference"]))
        ]
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return GamedBaseline(comparisons, difficulty)


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
