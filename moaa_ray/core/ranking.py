"""Rank a prompt's samples from pairwise judgments and pick the chosen/rejected DPO pair."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DROP_TOO_FEW_SAMPLES = "fewer than two samples"
DROP_NO_VALID_JUDGMENTS = "no valid judgments"
DROP_ALL_TIED = "all samples tied"
DROP_LOW_MARGIN = "margin below min_margin"
DROP_REASONS = (DROP_TOO_FEW_SAMPLES, DROP_NO_VALID_JUDGMENTS, DROP_ALL_TIED, DROP_LOW_MARGIN)

# Scores closer than this count as equal, so float noise never decides best or worst.
_TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Comparison:
    """One judged pair: sample ``i`` against sample ``j``.

    ``score_i`` is i's win score in [0, 1] (1 win, 0.5 tie, 0 loss, or a win probability), or None when
    the judges abstained.
    """

    i: int
    j: int
    score_i: float | None

    def __post_init__(self) -> None:
        if self.i == self.j:
            raise ValueError(f"a sample cannot be compared with itself (i = j = {self.i})")
        if self.score_i is not None and not 0.0 <= self.score_i <= 1.0:
            raise ValueError(f"score_i must lie in [0, 1] or be None, got {self.score_i}")


def win_scores(comparisons: Sequence[Comparison], k: int) -> list[float]:
    """Count each sample's wins, a tie counting half; abstentions count for neither.

    Sums are only comparable when every sample took part in equally many judgments (round robin
    without abstentions); use ``bradley_terry`` otherwise.

    Args:
        comparisons: judged pairs among ``k`` samples.
        k: samples per prompt.

    Returns:
        One score per sample, indexed like the samples.
    """
    _check_comparisons(comparisons, k)
    wins = [0.0] * k
    for comparison in comparisons:
        if comparison.score_i is None:
            continue
        wins[comparison.i] += comparison.score_i
        wins[comparison.j] += 1.0 - comparison.score_i
    return wins


def bradley_terry(
    comparisons: Sequence[Comparison],
    k: int,
    iterations: int = 1000,
    tol: float = 1e-10,
    prior: float = 0.1,
) -> list[float]:
    """Fit Bradley-Terry strengths with the MM algorithm (Hunter 2004, Ann. Statist. 32(1)).

    ``prior`` virtual ties between every two samples keep the fit finite when a sample never lost
    or never won, and make cycles and all-tie data come out as equal strengths.

    Args:
        comparisons: judged pairs among ``k`` samples; a fractional ``score_i`` counts as a partial win.
        k: samples per prompt.
        iterations: the most MM updates to run.
        tol: stop once no log-strength moves by more than this in one update.
        prior: virtual games per pair, each counted as a tie; must be positive.

    Returns:
        One log-strength per sample, centred at 0 (all zeros without usable judgments).
    """
    _check_comparisons(comparisons, k)
    if prior <= 0:
        raise ValueError(f"prior must be positive to keep strengths finite, got {prior}")
    if k <= 1:
        return [0.0] * k
    games = [[prior] * k for _ in range(k)]
    wins = [prior * (k - 1) / 2.0] * k
    for comparison in comparisons:
        if comparison.score_i is None:
            continue
        i, j = comparison.i, comparison.j
        games[i][j] += 1.0
        games[j][i] += 1.0
        wins[i] += comparison.score_i
        wins[j] += 1.0 - comparison.score_i
    log_strengths = [0.0] * k
    for _ in range(iterations):
        strengths = [math.exp(value) for value in log_strengths]
        updated = [
            math.log(wins[i])
            - math.log(sum(games[i][j] / (strengths[i] + strengths[j]) for j in range(k) if j != i))
            for i in range(k)
        ]
        updated = _centred(updated)
        change = max(abs(new - old) for new, old in zip(updated, log_strengths, strict=True))
        log_strengths = updated
        if change <= tol:
            return log_strengths
    logger.warning("Bradley-Terry did not converge to tol=%g in %d iterations", tol, iterations)
    return log_strengths


def table_scores(table: Sequence[Sequence[float]]) -> list[float]:
    """Each sample's ranking score from a pairwise source's K x K table of raw scores.

    llm-blender's ``max_logits`` policy, which GPM's ranker (``rank_gp.py``) uses too: sample i's
    score is the mean over all K samples j (itself counting 0) of ``table[i][j] - table[j][i]``.

    Args:
        table: ``[i][j]`` is the source's score of sample i over sample j.
    """
    k = len(table)
    return [sum(table[i][j] - table[j][i] for j in range(k)) / k for i in range(k)]


def select_best_worst(
    scores: Sequence[float], min_margin: float, *, num_valid_judgments: int | None = None
) -> tuple[int, int] | str:
    """Pick the best-scored sample as chosen and the worst as rejected, or say why the prompt is dropped.

    Ties for best or worst go to the lowest index; that is safe because a pair is only formed when
    the best and worst scores differ by more than ``min_margin``.

    Args:
        scores: one score per sample (``win_scores`` or ``bradley_terry`` output).
        min_margin: the best-minus-worst score gap must exceed this; 0 keeps any strict gap.
        num_valid_judgments: non-abstained judgments behind ``scores``, when the caller counted them.

    Returns:
        ``(chosen, rejected)`` sample indices, or one of ``DROP_REASONS``.
    """
    if min_margin < 0:
        raise ValueError(f"min_margin must be non-negative, got {min_margin}")
    if any(math.isnan(score) for score in scores):
        raise ValueError(f"scores must not be NaN, got {list(scores)}")
    if len(scores) < 2:
        return DROP_TOO_FEW_SAMPLES
    if num_valid_judgments == 0:
        return DROP_NO_VALID_JUDGMENTS
    best, worst = max(scores), min(scores)
    if best - worst <= _TIE_TOLERANCE:
        return DROP_ALL_TIED
    if best - worst <= min_margin:
        return DROP_LOW_MARGIN
    chosen = next(index for index, score in enumerate(scores) if score >= best - _TIE_TOLERANCE)
    rejected = next(index for index, score in enumerate(scores) if score <= worst + _TIE_TOLERANCE)
    return chosen, rejected


def _check_comparisons(comparisons: Sequence[Comparison], k: int) -> None:
    if k < 0:
        raise ValueError(f"the number of samples must be non-negative, got {k}")
    for comparison in comparisons:
        if not (0 <= comparison.i < k and 0 <= comparison.j < k):
            raise ValueError(f"comparison {comparison} refers to a sample outside [0, {k})")


def _centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [value - mean for value in values]
