import math

import pytest

from moaa_ray.core.winrates import (
    bootstrap_ci,
    bradley_terry_battles,
    length_controlled_win_rate,
    mt_bench_summary,
    parse_grade,
    render_grade_prompt,
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

    assert lc == pytest.approx(raw, abs=0.01)


def test_lc_win_rate_moves_to_50_when_length_explains_the_wins():
    scores, model_lengths, baseline_lengths = _length_explained_battles()

    lc = length_controlled_win_rate(scores, model_lengths, baseline_lengths)

    assert win_tie_loss(scores)["win_rate"] == pytest.approx(74.0)
    assert lc == pytest.approx(50.0, abs=0.5)


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
    scores = [1.0] * 3 + [0.0]

    lc = length_controlled_win_rate(scores, [500] * 4, [100] * 4)

    assert lc == pytest.approx(75.0, abs=0.1)  # the L2 penalty shrinks a 4-comparison fit slightly


def test_lc_win_rate_drops_abstentions_with_their_lengths():
    with_abstentions = length_controlled_win_rate(
        [1.0, None, 0.0, 1.0], [5, 999, 5, 5], [5, 1, 5, 5]
    )

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


def test_mt_bench_summary_averages_per_turn_and_overall_and_counts_missing():
    grades = [
        {"question_id": "1", "turn": 1, "score": 8.0},
        {"question_id": "2", "turn": 1, "score": 6.0},
        {"question_id": "1", "turn": 2, "score": 4.0},
        {"question_id": "2", "turn": 2, "score": None},
    ]

    summary = mt_bench_summary(grades)

    assert summary == {
        "per_turn": {1: 7.0, 2: 4.0},
        "overall": pytest.approx(6.0),
        "num_graded": 3,
        "num_missing": 1,
    }


def test_mt_bench_summary_of_no_grades_is_nan():
    summary = mt_bench_summary([{"turn": 1, "score": None}])

    assert math.isnan(summary["overall"])
    assert summary["num_missing"] == 1


def test_mt_bench_summary_names_a_grade_without_a_score():
    with pytest.raises(ValueError, match=r"grades\[1\]"):
        mt_bench_summary([{"turn": 1, "score": 5}, {"turn": 2}])


@pytest.mark.parametrize(
    ("text", "grade"),
    [
        ("The answer is fine.\n\nRating: [[7]]", 7.0),
        ("Rating: [[7.5]]", 7.5),
        ("[[ 8 ]]", 8.0),
        ("Rating: [[9/10]]", 9.0),
        ('Format "Rating: [[5]]" ... my verdict: Rating: [[3]]', 3.0),
        ("Rating: [[0]]", 1.0),
        ("Rating: [[12]]", 10.0),
        ("rating: 6", 6.0),
        ("Rating: [4]", 4.0),
        ("See reference [1] and [2].", None),
        ("No grade here.", None),
        ("Rating: [[N]]", None),
    ],
)
def test_parse_grade_variants(text, grade):
    assert parse_grade(text) == grade


def test_render_grade_prompt_single_turn_without_reference():
    messages = render_grade_prompt(["What is 2+2?"], ["4"])

    assert len(messages) == 1
    assert messages[0]["role"] == "user"
    content = messages[0]["content"]
    assert "[Question]\nWhat is 2+2?\n" in content
    assert "[The Start of Assistant's Answer]\n4\n[The End of Assistant's Answer]" in content
    assert "Reference Answer" not in content
    assert "Rating: [[" in content
    assert "$" not in content


def test_render_grade_prompt_second_turn_shows_history_and_reference():
    messages = render_grade_prompt(["q one", "q two"], ["a one", "a two"], reference="ref two")

    content = messages[0]["content"]
    assert "### User:\nq one\n\n### Assistant:\na one\n\n### User:\nq two" in content
    assert "[The Start of Reference Answer]\nref two\n[The End of Reference Answer]" in content
    assert "[The Start of Assistant's Answer]\na two\n" in content
    assert content.index("a one") < content.index("ref two") < content.index("a two")


def test_render_grade_prompt_rejects_mismatched_turns():
    with pytest.raises(ValueError, match="2 questions and 1 answers"):
        render_grade_prompt(["q1", "q2"], ["a1"])
