import math

import pytest

from moaa_ray.core.winrates import (
    bootstrap_ci,
    bradley_terry_battles,
    length_controlled_win_rate,
    win_tie_loss,
)


def test_win_tie_loss_counts_ties_as_half_and_skips_abstentions():
    result = win_tie_loss([1, 1, 0.5, 0, None])

    assert result == {"wins": 2, "ties": 1, "losses": 1, "abstained": 1, "win_rate": 62.5}


def test_win_tie_loss_is_nan_when_every_judge_abstained():
    result = win_tie_loss([None, None])

    assert result["abstained"] == 2
    assert math.isnan(result["win_rate"])


def test_win_tie_loss_rejects_scores_outside_unit_interval():
    with pytest.raises(ValueError, match=r"scores\[1\]"):
        win_tie_loss([1, 2])


def _length_explained_battles():
    """Model answers are longer in 40 of 50 comparisons and win mostly there (raw win rate 74%)."""
    scores = [1.0] * 36 + [0.0] * 4 + [1.0] * 1 + [0.0] * 9
    model_lengths = [200] * 40 + [100] * 10
    baseline_lengths = [100] * 40 + [200] * 10
    return scores, model_lengths, baseline_lengths


def test_lc_win_rate_equals_raw_win_rate_when_lengths_are_equal():
    scores = [1.0] * 6 + [0.5] * 2 + [0.0] * 2
    raw = win_tie_loss(scores)["win_rate"]

    lc = length_controlled_win_rate(scores, [300] * 10, [300] * 10)

    assert lc == pytest.approx(raw, abs=0.5)  # the L1 penalty shrinks a 10-comparison fit slightly


def test_lc_win_rate_moves_toward_50_when_length_explains_the_wins():
    scores, model_lengths, baseline_lengths = _length_explained_battles()

    lc = length_controlled_win_rate(scores, model_lengths, baseline_lengths)

    assert win_tie_loss(scores)["win_rate"] == pytest.approx(74.0)
    assert lc == pytest.approx(58.44, abs=0.1)  # alpaca_eval 0.6.6 on the same rows: 58.44


def test_lc_win_rate_is_symmetric_between_model_and_baseline():
    scores, model_lengths, baseline_lengths = _length_explained_battles()
    scores = [1.0] * 30 + [0.5] * 6 + [0.0] * 4 + [1.0] * 5 + [0.0] * 5

    forward = length_controlled_win_rate(scores, model_lengths, baseline_lengths)
    flipped = length_controlled_win_rate([1 - s for s in scores], baseline_lengths, model_lengths)

    assert forward + flipped == pytest.approx(100.0, abs=1e-6)


def test_lc_win_rate_stays_finite_when_the_model_always_wins_or_always_loses():
    lengths = list(range(100, 200))

    all_wins = length_controlled_win_rate([1.0] * 100, lengths, [150] * 100)
    all_losses = length_controlled_win_rate([0.0] * 100, lengths, [150] * 100)

    assert 99.0 < all_wins < 100.0
    assert 0.0 < all_losses < 1.0


def test_lc_win_rate_with_constant_length_gap_is_the_raw_win_rate():
    scores = [1.0] * 30 + [0.0] * 10

    lc = length_controlled_win_rate(scores, [500] * 40, [100] * 40)

    assert lc == length_controlled_win_rate(scores, [100] * 40, [100] * 40)
    assert lc == pytest.approx(75.0, abs=0.1)


def test_lc_win_rate_drops_abstentions_from_the_fit():
    with_abstentions = length_controlled_win_rate(
        [1.0, None, 0.0, 1.0] * 10, [5, 999, 5, 5] * 10, [5, 1, 5, 5] * 10
    )
    without = length_controlled_win_rate([1.0, 0.0, 1.0] * 10, [5] * 30, [5] * 30)

    assert with_abstentions == pytest.approx(without, rel=1e-9)
    assert with_abstentions == pytest.approx(200 / 3, abs=0.1)


def test_lc_win_rate_is_nan_when_nothing_was_decided():
    assert math.isnan(length_controlled_win_rate([None], [1], [1]))


def test_lc_win_rate_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        length_controlled_win_rate([1.0, 0.0], [10, 20], [10])


def _battles(model, anchor, wins, ties, losses):
    return (
        [(model, anchor, 1.0)] * wins
        + [(anchor, model, 0.5)] * ties
        + [(anchor, model, 1.0)] * losses
    )


def test_bt_anchor_scores_50_and_a_dominating_model_more():
    battles = _battles("strong", "base", 70, 0, 30) + _battles("weak", "base", 20, 20, 60)

    scores = bradley_terry_battles(battles, anchor="base")

    assert scores["base"] == pytest.approx(50.0)
    assert scores["strong"] == pytest.approx(70.0, abs=1.0)
    assert scores["weak"] == pytest.approx(30.0, abs=1.0)
    assert list(scores) == ["strong", "base", "weak"]


def test_bt_scores_models_that_never_met_the_anchor_through_a_chain():
    battles = _battles("mid", "base", 50, 0, 50) + _battles("top", "mid", 75, 0, 25)

    scores = bradley_terry_battles(battles, anchor="base")

    assert scores["mid"] == pytest.approx(50.0, abs=0.5)
    assert scores["top"] == pytest.approx(75.0, abs=1.0)


def test_bt_unbeaten_model_gets_a_finite_score():
    scores = bradley_terry_battles(_battles("a", "b", 10, 0, 0), anchor="b")

    assert 90.0 < scores["a"] < 100.0


def test_bt_anchor_score_sets_the_anchor_and_keeps_the_order():
    battles = _battles("strong", "base", 70, 0, 30)

    scores = bradley_terry_battles(battles, anchor="base", anchor_score=20.0)

    assert scores["base"] == pytest.approx(20.0)
    assert scores["strong"] > 20.0


@pytest.mark.parametrize(
    ("battles", "message"),
    [
        ([("a", "b", 1.0)], "anchor model 'base' has no battles"),
        ([("a", "base", 1.0), ("c", "d", 0.0)], r"no chain of battles to 'base': \['c', 'd'\]"),
        ([("a", "a", 1.0), ("a", "base", 1.0)], r"battles\[0\].*itself"),
        ([("a", "base", 1.5)], r"battles\[0\].*\[0, 1\]"),
    ],
)
def test_bt_rejects_bad_battles(battles, message):
    with pytest.raises(ValueError, match=message):
        bradley_terry_battles(battles, anchor="base")


def test_bootstrap_interval_contains_the_point_and_brackets_the_fit():
    battles = _battles("strong", "base", 70, 0, 30) + _battles("weak", "base", 30, 10, 60)

    intervals = bootstrap_ci(battles, anchor="base", num_rounds=50)
    point = bradley_terry_battles(battles, anchor="base")

    assert intervals["base"] == pytest.approx((50.0, 50.0, 50.0))
    for model in ("strong", "weak"):
        median, lower, upper = intervals[model]
        assert lower < median < upper
        assert lower < point[model] < upper
        assert upper - lower < 30.0


def test_bootstrap_is_deterministic_for_a_seed():
    battles = _battles("strong", "base", 60, 10, 30)

    first = bootstrap_ci(battles, anchor="base", num_rounds=20, seed=3)
    again = bootstrap_ci(battles, anchor="base", num_rounds=20, seed=3)
    other = bootstrap_ci(battles, anchor="base", num_rounds=20, seed=4)

    assert first == again
    assert first != other


def test_bootstrap_interval_narrows_with_more_battles():
    few = bootstrap_ci(_battles("m", "base", 7, 0, 3), anchor="base", num_rounds=50)
    many = bootstrap_ci(_battles("m", "base", 70, 0, 30), anchor="base", num_rounds=50)

    assert many["m"][2] - many["m"][1] < few["m"][2] - few["m"][1]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_rounds"):
        bootstrap_ci(_battles("m", "base", 1, 0, 1), anchor="base", num_rounds=0)


def test_the_virtual_tie_per_pair_pulls_a_bt_score_toward_50_as_the_readme_says():
    # 18 wins and 2 losses against the baseline: a 90% win rate reads 88.1 (the project's own BT).
    battles = [("m", "base", 1.0)] * 18 + [("m", "base", 0.0)] * 2
    assert bradley_terry_battles(battles, "base")["m"] == pytest.approx(88.1, abs=0.05)
