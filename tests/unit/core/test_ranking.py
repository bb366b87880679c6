"""Tests for moaa_ray.core.ranking: win counts, Bradley-Terry and chosen/rejected selection."""

from __future__ import annotations

import math

import pytest

from moaa_ray.core.ranking import (
    DROP_ALL_TIED,
    DROP_LOW_MARGIN,
    DROP_NO_VALID_JUDGMENTS,
    DROP_REASONS,
    DROP_TOO_FEW_SAMPLES,
    Comparison,
    bradley_terry,
    select_best_worst,
    table_scores,
    win_scores,
)

# 0 > 1 > 2 > 3 in every pair, round robin: 3, 2, 1 and 0 wins.
TRANSITIVE = [Comparison(i, j, 1.0) for i in range(4) for j in range(i + 1, 4)]
CYCLE = [Comparison(0, 1, 1.0), Comparison(1, 2, 1.0), Comparison(2, 0, 1.0)]


def test_comparison_rejects_self_pairs_and_scores_outside_unit_interval():
    with pytest.raises(ValueError, match="itself"):
        Comparison(1, 1, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Comparison(0, 1, 1.5)


def test_win_scores_count_wins_and_half_ties_and_skip_abstentions():
    comparisons = [
        Comparison(0, 1, 1.0),
        Comparison(0, 2, 0.5),
        Comparison(1, 2, None),
        Comparison(2, 1, 0.0),
        Comparison(0, 1, 0.75),
    ]
    assert win_scores(comparisons, 3) == [2.25, 1.25, 0.5]


def test_win_scores_reject_out_of_range_indices():
    with pytest.raises(ValueError, match="outside"):
        win_scores([Comparison(0, 3, 1.0)], 3)


def test_bradley_terry_orders_a_transitive_set_like_win_counts():
    strengths = bradley_terry(TRANSITIVE, 4)
    wins = win_scores(TRANSITIVE, 4)
    assert wins == [3.0, 2.0, 1.0, 0.0]
    assert strengths[0] > strengths[1] > strengths[2] > strengths[3]
    assert sum(strengths) == pytest.approx(0.0, abs=1e-9)
    assert all(math.isfinite(value) for value in strengths)


def test_bradley_terry_gives_a_cycle_equal_strengths():
    assert bradley_terry(CYCLE, 3) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_bradley_terry_gives_all_ties_equal_strengths():
    ties = [Comparison(i, j, 0.5) for i in range(3) for j in range(i + 1, 3)]
    assert bradley_terry(ties, 3) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_bradley_terry_keeps_an_undefeated_sample_finite():
    strengths = bradley_terry([Comparison(0, 1, 1.0), Comparison(0, 2, 1.0)], 3)
    assert all(math.isfinite(value) for value in strengths)
    assert strengths[0] > strengths[1] == pytest.approx(strengths[2])


def test_bradley_terry_uses_other_samples_to_rank_unequal_schedules():
    # 1 and 2 each beat 3 once; 1 also beat 0, 2 lost to 0 - so 1 must rank above 2.
    comparisons = [
        Comparison(1, 3, 1.0),
        Comparison(2, 3, 1.0),
        Comparison(1, 0, 1.0),
        Comparison(0, 2, 1.0),
    ]
    strengths = bradley_terry(comparisons, 4)
    assert strengths[1] > strengths[0] > strengths[2] > strengths[3]


def test_bradley_terry_larger_prior_shrinks_strengths_towards_zero():
    weak_prior = bradley_terry(TRANSITIVE, 4, prior=0.1)
    strong_prior = bradley_terry(TRANSITIVE, 4, prior=5.0)
    assert strong_prior[0] - strong_prior[3] < weak_prior[0] - weak_prior[3]


def test_bradley_terry_without_usable_judgments_is_all_zero():
    abstained = [Comparison(0, 1, None), Comparison(1, 2, None)]
    assert bradley_terry(abstained, 3) == [0.0, 0.0, 0.0]
    assert bradley_terry([], 1) == [0.0]
    assert bradley_terry([], 0) == []


def test_bradley_terry_rejects_a_non_positive_prior():
    with pytest.raises(ValueError, match="prior"):
        bradley_terry(TRANSITIVE, 4, prior=0.0)


def test_bradley_terry_warns_when_iterations_run_out(caplog):
    with caplog.at_level("WARNING", logger="moaa_ray.core.ranking"):
        bradley_terry(TRANSITIVE, 4, iterations=1)
    assert "did not converge" in caplog.text


def test_select_best_worst_picks_highest_and_lowest():
    assert select_best_worst([1.0, 3.0, 0.0, 2.0], min_margin=0.0) == (1, 2)


def test_ties_for_best_or_worst_go_to_the_lowest_index():
    assert select_best_worst([0.0, 2.0, 2.0, 0.0], min_margin=1.0) == (1, 0)


def test_single_or_no_sample_is_dropped():
    assert select_best_worst([1.0], min_margin=0.0) == DROP_TOO_FEW_SAMPLES
    assert select_best_worst([], min_margin=0.0) == DROP_TOO_FEW_SAMPLES


def test_all_abstained_is_dropped_as_no_valid_judgments():
    scores = bradley_terry([Comparison(0, 1, None)], 2)
    assert select_best_worst(scores, 0.0, num_valid_judgments=0) == DROP_NO_VALID_JUDGMENTS
    assert select_best_worst(scores, 0.0) == DROP_ALL_TIED


def test_cycle_is_dropped_as_all_tied():
    assert select_best_worst(bradley_terry(CYCLE, 3), min_margin=0.0) == DROP_ALL_TIED
    assert select_best_worst(win_scores(CYCLE, 3), min_margin=0.0) == DROP_ALL_TIED


def test_margin_must_exceed_min_margin():
    assert select_best_worst([2.0, 1.5, 1.0], min_margin=1.0) == DROP_LOW_MARGIN
    assert select_best_worst([2.0, 1.5, 0.9], min_margin=1.0) == (0, 2)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="min_margin"):
        select_best_worst([1.0, 0.0], min_margin=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        select_best_worst([1.0, math.nan], min_margin=0.0)


def test_drop_reasons_are_distinct():
    assert len(set(DROP_REASONS)) == len(DROP_REASONS) == 4


def test_table_scores_are_the_mean_margin_over_every_sample_itself_included():
    # A GPM's cycle (skew-symmetric): 0 beats 1, 1 beats 2, 2 beats 0, equally: no sample ranks first.
    cycle = [[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]]
    assert table_scores(cycle) == [0.0, 0.0, 0.0]
    # PairRM's logits per order need not cancel: both orders count, divided by K (itself 0).
    logits = [[0.0, 2.0, 0.5], [-1.0, 0.0, -3.0], [0.1, 2.0, 0.0]]
    assert table_scores(logits) == pytest.approx(
        [(3.0 + 0.4) / 3, (-3.0 - 5.0) / 3, (-0.4 + 5.0) / 3]
    )
