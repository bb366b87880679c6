"""General preferences over a prompt's K samples: win-probability matrices and the SPPO/GPO targets.

A preference source need not be transitive (A > B > C > A), so SPPO's targets are read from a K x K
matrix ``P[i][j] = P(sample i beats sample j)`` rather than from one score per sample. The matrix
comes from the source:

- a pairwise table (a general preference model, PairRM): ``P[i][j] = sigmoid(T[i][j] - T[j][i])``,
  as SPPO-GPM's ``compute_prob_from_raw.py`` reads GPM's table (general-preference-model,
  ``general_preference/scripts``);
- LLM judges in both orders: each judged pair's combined win probability
  (:func:`moaa_ray.core.tournament.pair_comparisons`); a pair without a verdict is unknown (None);
- per-sample strengths (a scalar reward model, or ``win_probabilities: strengths``):
  ``P[i][j] = sigmoid(s_i - s_j)``, as SPPO's ``compute_prob.py`` reads PairRM's scores.

SPPO's target for sample i is its win rate against the policy, the mean of its row (the diagonal,
1/2, included: the scripts' ``sum(axis=1) / K``). GPO's (General Preference Optimization, Zhang et
al., arXiv 2410.02197) is the mean of its row of score differences ``T[i][j] - T[j][i]``, as
``compute_score_from_raw.py`` writes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from moaa_ray.core.ranking import Comparison

Matrix = list[list[float]]
PartialMatrix = list[
    list[float | None]
]  # None: the pair was not judged, or every verdict abstained


def _sigmoid(x: float) -> float:
    """The logistic function without overflow (the scripts' ``exp`` overflow becomes exactly 1)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _check_square(table: Sequence[Sequence[float | None]]) -> int:
    k = len(table)
    if k < 2 or any(len(row) != k for row in table):
        raise ValueError(f"a preference table is K x K with K >= 2, got {[len(r) for r in table]}")
    return k


def score_differences(table: Sequence[Sequence[float]]) -> Matrix:
    """``D[i][j] = T[i][j] - T[j][i]``: a pairwise table made skew-symmetric (zero diagonal)."""
    k = _check_square(table)
    return [[table[i][j] - table[j][i] for j in range(k)] for i in range(k)]


def matrix_from_table(table: Sequence[Sequence[float]]) -> Matrix:
    """Win probabilities from a pairwise table: ``sigmoid(T[i][j] - T[j][i])`` (1/2 on the diagonal)."""
    return [[_sigmoid(d) for d in row] for row in score_differences(table)]


def matrix_from_strengths(scores: Sequence[float]) -> Matrix:
    """Bradley-Terry win probabilities from per-sample strengths: ``sigmoid(s_i - s_j)``."""
    _check_square([list(scores)] * len(scores))
    return [[_sigmoid(si - sj) for sj in scores] for si in scores]


def matrix_from_comparisons(comparisons: Sequence[Comparison], k: int) -> PartialMatrix:
    """Win probabilities from judged pairs: ``P[i][j] = score_i``, ``P[j][i] = 1 - score_i``.

    Pairs never compared, or whose judges all abstained, stay None; the diagonal is 1/2.

    Raises:
        ValueError: a pair is compared twice, or names a sample outside ``range(k)``.
    """
    matrix: PartialMatrix = [[0.5 if i == j else None for j in range(k)] for i in range(k)]
    seen: set[frozenset[int]] = set()
    for c in comparisons:
        if not (0 <= c.i < k and 0 <= c.j < k):
            raise ValueError(f"comparison ({c.i}, {c.j}) names a sample outside 0..{k - 1}")
        if frozenset((c.i, c.j)) in seen:
            raise ValueError(f"samples {c.i} and {c.j} are compared twice")
        seen.add(frozenset((c.i, c.j)))
        if c.score_i is not None:
            matrix[c.i][c.j], matrix[c.j][c.i] = c.score_i, 1.0 - c.score_i
    return matrix


def win_rates(matrix: Sequence[Sequence[float | None]]) -> list[float]:
    """SPPO's target per sample: the mean of its row, its own 1/2 included.

    A row with unknown entries (unjudged pairs) is averaged over the known ones, so an unjudged
    pair neither wins nor loses.
    """
    _check_square(matrix)
    rows = [[p for p in row if p is not None] for row in matrix]
    return [sum(row) / len(row) for row in rows]


def mean_score_differences(table: Sequence[Sequence[float]]) -> list[float]:
    """GPO's target per sample: the mean of its row of score differences (its own 0 included)."""
    return [sum(row) / len(row) for row in score_differences(table)]
