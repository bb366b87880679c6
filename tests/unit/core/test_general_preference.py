"""Win-probability matrices and SPPO/GPO targets against the reference scripts' loops.

The oracles re-state, loop for loop, SPPO's ``scripts/compute_prob.py`` (uclaml/SPPO: PairRM scores
read as Bradley-Terry strengths) and general-preference-model's
``general_preference/scripts/compute_prob_from_raw.py`` and ``compute_score_from_raw.py`` (a GPM's
raw table).
"""

import math

import numpy as np
import pytest

from moaa_ray.core.general_preference import (
    matrix_from_comparisons,
    matrix_from_strengths,
    matrix_from_table,
    mean_score_differences,
    score_differences,
    win_rates,
)
from moaa_ray.core.ranking import Comparison

RNG = np.random.default_rng(0)
TABLE = RNG.normal(scale=2.0, size=(5, 5)).tolist()
SCORES = RNG.normal(size=5).tolist()


def sppo_compute_prob(scores):
    """compute_prob.py: prb[i][j] = 1 / (1 + exp(score[j] - score[i])), then row sums / K."""
    k = len(scores)
    prb = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            prb[i][j] = 1 / (1 + np.exp(scores[j] - scores[i]))
    return prb, prb.sum(axis=1) / k


def gpm_compute_prob_from_raw(table, as_score=False):
    """compute_prob_from_raw.py (compute_score_from_raw.py with ``as_score``), then row sums / K."""
    k = len(table)
    prb = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            weighted_score = table[i][j] - table[j][i]
            if as_score:
                prb[i][j] = weighted_score
            elif np.exp(weighted_score) == np.inf:
                prb[i][j] = 1
            else:
                prb[i][j] = np.exp(weighted_score) / (1 + np.exp(weighted_score))
    return prb, prb.sum(axis=1) / k


def test_strengths_give_sppos_win_rates():
    matrix, rates = sppo_compute_prob(SCORES)
    assert np.allclose(matrix_from_strengths(SCORES), matrix, atol=1e-15)
    assert np.allclose(win_rates(matrix_from_strengths(SCORES)), rates, atol=1e-15)


def test_a_pairwise_table_gives_sppo_gpms_probabilities_and_gpos_score_targets():
    matrix, rates = gpm_compute_prob_from_raw(TABLE)
    assert np.allclose(matrix_from_table(TABLE), matrix, atol=1e-15)
    assert np.allclose(win_rates(matrix_from_table(TABLE)), rates, atol=1e-15)
    differences, targets = gpm_compute_prob_from_raw(TABLE, as_score=True)
    assert np.allclose(score_differences(TABLE), differences, atol=1e-15)
    assert np.allclose(mean_score_differences(TABLE), targets, atol=1e-15)


def test_huge_score_differences_saturate_without_overflow():
    table = [[0.0, 1000.0], [-1000.0, 0.0]]
    assert matrix_from_table(table) == [[0.5, 1.0], [0.0, 0.5]]
    assert gpm_compute_prob_from_raw(table)[0].tolist() == [[0.5, 1.0], [0.0, 0.5]]


def test_a_non_transitive_preference_is_kept_where_strengths_would_erase_it():
    # 0 beats 1, 1 beats 2, 2 beats 0, each with probability 0.8.
    cycle = [Comparison(0, 1, 0.8), Comparison(1, 2, 0.8), Comparison(0, 2, 0.2)]
    matrix = matrix_from_comparisons(cycle, 3)
    assert np.allclose(matrix, [[0.5, 0.8, 0.2], [0.2, 0.5, 0.8], [0.8, 0.2, 0.5]])
    assert win_rates(matrix) == pytest.approx([0.5, 0.5, 0.5])
    # No strengths give P(0>1), P(1>2) and P(2>0) all above 1/2: their logits would sum to 0.
    logit = [math.log(p / (1 - p)) for p in (matrix[0][1], matrix[1][2], matrix[2][0])]
    assert sum(logit) != pytest.approx(0.0)


def test_unjudged_pairs_neither_win_nor_lose():
    matrix = matrix_from_comparisons([Comparison(0, 1, 1.0), Comparison(1, 2, None)], 3)
    assert matrix == [[0.5, 1.0, None], [0.0, 0.5, None], [None, None, 0.5]]
    assert win_rates(matrix) == [0.75, 0.25, 0.5]


@pytest.mark.parametrize(
    ("comparisons", "match"),
    [
        ([Comparison(0, 3, 1.0)], "outside 0..2"),
        ([Comparison(0, 1, 1.0), Comparison(1, 0, 0.0)], "compared twice"),
    ],
)
def test_bad_comparisons_are_refused(comparisons, match):
    with pytest.raises(ValueError, match=match):
        matrix_from_comparisons(comparisons, 3)


def test_a_table_must_be_square():
    with pytest.raises(ValueError, match="K x K"):
        score_differences([[0.0, 1.0]])


def test_mean_score_differences_are_the_mean_margin_over_every_sample_itself_included():
    # A GPM's cycle (skew-symmetric): 0 beats 1, 1 beats 2, 2 beats 0, equally: no sample ranks first.
    cycle = [[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]]
    assert mean_score_differences(cycle) == [0.0, 0.0, 0.0]
    # PairRM's logits per order need not cancel: both orders count, divided by K (itself 0).
    logits = [[0.0, 2.0, 0.5], [-1.0, 0.0, -3.0], [0.1, 2.0, 0.0]]
    assert mean_score_differences(logits) == pytest.approx(
        [(3.0 + 0.4) / 3, (-3.0 - 5.0) / 3, (-0.4 + 5.0) / 3]
    )
