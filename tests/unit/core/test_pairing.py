"""Tests for moaa_ray.core.pairing: which pairs to judge and the judge-call budget."""

from __future__ import annotations

import pytest

from moaa_ray.core.pairing import anchor_pairs, count_judge_calls, round_robin_pairs


def test_round_robin_lists_each_unordered_pair_once():
    pairs = round_robin_pairs(4)
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert len(round_robin_pairs(5)) == 10


@pytest.mark.parametrize("k", [0, 1])
def test_round_robin_of_fewer_than_two_samples_is_empty(k):
    assert round_robin_pairs(k) == []


def test_anchor_pairs_compare_the_anchor_with_every_other_sample():
    assert anchor_pairs(4) == [(0, 1), (0, 2), (0, 3)]
    assert anchor_pairs(4, anchor=2) == [(2, 0), (2, 1), (2, 3)]
    assert anchor_pairs(1) == []


@pytest.mark.parametrize("anchor", [-1, 3])
def test_anchor_outside_the_samples_is_rejected(anchor):
    with pytest.raises(ValueError, match="anchor"):
        anchor_pairs(3, anchor=anchor)


def test_negative_sample_count_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        round_robin_pairs(-1)


def test_paper_budget_is_81_calls_per_prompt():
    num_pairs = len(round_robin_pairs(5))
    assert count_judge_calls(num_pairs, num_judges=3) == 81
    assert count_judge_calls(num_pairs, num_judges=3, with_criteria_selection=False) == 80


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"both_orders": False}, 10 * 4 + 1),
        ({"with_aggregator": False}, 10 * 2 * 3 + 1),
        ({"both_orders": False, "with_aggregator": False, "with_criteria_selection": False}, 30),
    ],
)
def test_budget_options_remove_their_calls(kwargs, expected):
    assert count_judge_calls(10, 3, **kwargs) == expected


def test_prompt_without_pairs_costs_nothing():
    assert count_judge_calls(0, 3) == 0


def test_negative_counts_are_rejected():
    with pytest.raises(ValueError):
        count_judge_calls(10, -1)
