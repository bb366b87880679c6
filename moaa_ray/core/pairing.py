"""Which sample pairs to judge per prompt, and what that costs in judge calls."""

from __future__ import annotations


def round_robin_pairs(k: int) -> list[tuple[int, int]]:
    """List every pair of ``k`` samples once (a full round robin).

    Args:
        k: samples per prompt.

    Returns:
        ``(i, j)`` for all ``i < j``, in lexicographic order; ``k * (k - 1) / 2`` pairs.
    """
    _check_sample_count(k)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def anchor_pairs(k: int, anchor: int = 0) -> list[tuple[int, int]]:
    """Pair one anchor sample with each other sample: ``k - 1`` judgments instead of ``k(k-1)/2``.

    Args:
        k: samples per prompt.
        anchor: index of the sample every other sample is compared with.

    Returns:
        ``(anchor, j)`` for every ``j != anchor``, in increasing ``j``.
    """
    _check_sample_count(k)
    if k and not 0 <= anchor < k:
        raise ValueError(f"anchor must be a sample index in [0, {k}), got {anchor}")
    return [(anchor, j) for j in range(k) if j != anchor]


def count_judge_calls(
    num_pairs: int,
    num_judges: int,
    both_orders: bool = True,
    with_aggregator: bool = True,
    with_criteria_selection: bool = True,
) -> int:
    """Count the LLM calls one prompt costs in the judging stage.

    The paper config's setup: 5 samples in round robin give 10 pairs x 2 orders x (3 judges + 1
    aggregator) = 80 calls, plus 1 criteria selection call = 81.

    Args:
        num_pairs: pairs judged for the prompt.
        num_judges: judge models per pair and order.
        both_orders: whether each pair is judged in both A/B orders.
        with_aggregator: whether an aggregator judge runs after the judges for each pair and order.
        with_criteria_selection: whether one criteria selection call runs per prompt; skipped when
            there is no pair to judge.

    Returns:
        The number of calls.
    """
    if num_pairs < 0 or num_judges < 0:
        raise ValueError(f"counts must be non-negative, got {num_pairs} pairs, {num_judges} judges")
    if num_pairs == 0:
        return 0
    orders = 2 if both_orders else 1
    calls_per_order = num_judges + (1 if with_aggregator else 0)
    selection_calls = 1 if with_criteria_selection else 0
    return num_pairs * orders * calls_per_order + selection_calls


def _check_sample_count(k: int) -> None:
    if k < 0:
        raise ValueError(f"the number of samples must be non-negative, got {k}")
