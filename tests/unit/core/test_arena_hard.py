"""moaa_ray.core.arena_hard against arena-hard-auto v0.1's scoring, re-implemented with the libraries it
uses (pandas, scikit-learn) in tests/support/arena_hard_auto.py, on a synthetic battle set."""

from __future__ import annotations

import numpy as np
import pytest

from moaa_ray.core import arena_hard
from moaa_ray.core.arena_hard import (
    JUDGE_RETRY_PROMPT,
    JUDGE_SYSTEM_PROMPT,
    VERDICTS,
    answer_style_counts,
    arena_hard_scores,
    battles_from_verdicts,
    lacks_verdict_label,
    parse_arena_hard_verdict,
    render_arena_hard_judge_prompt,
)
from tests.support.synthetic_arena import synthetic_verdict

BASELINE = "gpt-4-0314"
# skill, and mean verbosity (the baseline's is 0.5): the strong model is also the most verbose.
MODELS = {"strong-model": (0.4, 0.8), "even-model": (0.0, 0.5), "weak-model": (-0.7, 0.3)}
QUESTIONS = 300


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    from tests.support import arena_hard_auto

    return arena_hard_auto


def _answer(rng: np.random.RandomState, verbosity: float) -> str:
    """A markdown answer whose length and formatting grow with ``verbosity``."""
    parts = []
    for _ in range(rng.poisson(1 + 2 * verbosity)):
        parts.append(f"{'#' * rng.randint(1, 7)} Section\n")
    for _ in range(rng.poisson(1 + 4 * verbosity)):
        parts.append(rng.choice(["- item", "* item", "1. step", "  + nested"]) + " text\n")
    for _ in range(rng.poisson(1 + 3 * verbosity)):
        parts.append(rng.choice(["Some **bold** words.", "Some __bold__ words."]) + "\n")
    if rng.rand() < 0.3:
        parts.append("```\n# not a header\n- not a list\n```\n")
    parts.append("word " * rng.randint(20, int(60 + 400 * verbosity)))
    rng.shuffle(parts)
    return "".join(parts)


@pytest.fixture(scope="module")
def judged():
    """Synthetic Arena-Hard judgments: verdicts favour stronger models and longer, richer answers."""
    rng = np.random.RandomState(7)
    answers = {BASELINE: {q: _answer(rng, 0.5) for q in range(QUESTIONS)}}
    rows = []
    for model, (skill, mean_verbosity) in MODELS.items():
        answers[model] = {}
        for q in range(QUESTIONS):
            verbosity = mean_verbosity + 0.4 * (rng.rand() - 0.5)
            answers[model][q] = _answer(rng, verbosity)
            advantage = skill + 3.0 * (verbosity - 0.5)
            games = [
                synthetic_verdict(rng, advantage, False),
                synthetic_verdict(rng, advantage, True),
            ]
            rows.append({"question_id": q, "model": model, "games": games})
    counts = {
        model: {q: answer_style_counts(a, len(a.split())) for q, a in by_question.items()}
        for model, by_question in answers.items()
    }
    return rows, answers, counts


def _our_battles(rows, counts):
    battles, style = [], []
    for row in rows:
        new = battles_from_verdicts(row["model"], BASELINE, *row["games"])
        battles += new
        pair = [counts[BASELINE][row["question_id"]], counts[row["model"]][row["question_id"]]]
        style += [pair] * len(new)
    return battles, np.array(style, dtype=float)


def _oracle_battles(oracle, rows, counts, style_control):
    import pandas as pd

    judgments = pd.DataFrame(
        [{**row, "games": [{"score": verdict} for verdict in row["games"]]} for row in rows]
    )
    metadata = None
    if style_control:
        metadata = {
            model: {
                q: {
                    "conv_metadata": {
                        "token_len": tokens,
                        "header_count": {"h1": headers},
                        "list_count": {"ordered": lists},
                        "bold_count": {"**": bolds},
                    }
                }
                for q, (tokens, headers, lists, bolds) in by_question.items()
            }
            for model, by_question in counts.items()
        }
    return oracle.judgments_to_battles(judgments, baseline=BASELINE, metadata=metadata)


def _oracle_scores(oracle, battles, style_control):
    np.random.seed(42)  # what importing arena-hard-auto's utils_math.py does
    stats = oracle.leaderboard(battles, BASELINE, num_rounds=100, style_control=style_control)
    return {
        row.model: {"score": row.score, "lower": row.lower, "upper": row.upper}
        for row in stats.itertuples()
    }


def _max_delta(ours, theirs):
    assert ours.keys() == theirs.keys()
    return max(abs(ours[m][k] - theirs[m][k]) for m in ours for k in ("score", "lower", "upper"))


# -- judge prompt and verdicts --


def test_judge_prompt_is_arena_hard_autos_system_prompt_and_template(oracle):
    messages = render_arena_hard_judge_prompt("What is 2+2? {x}", "It is 4.", "Four.")

    assert messages == [
        {"role": "system", "content": oracle.JUDGE_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": oracle.JUDGE_USER_TEMPLATE.format(
                question_1="What is 2+2? {x}", answer_1="It is 4.", answer_2="Four."
            ),
        },
    ]


def test_judge_prompt_places_question_then_answer_a_then_answer_b():
    user = render_arena_hard_judge_prompt("QUESTION", "ANSWER-ONE", "ANSWER-TWO")[1]["content"]

    assert user == (
        "<|User Prompt|>\nQUESTION\n\n"
        "<|The Start of Assistant A's Answer|>\nANSWER-ONE\n<|The End of Assistant A's Answer|>\n\n"
        "<|The Start of Assistant B's Answer|>\nANSWER-TWO\n<|The End of Assistant B's Answer|>"
    )
    assert "generating your own answer" in JUDGE_SYSTEM_PROMPT


@pytest.mark.parametrize("label", VERDICTS)
def test_each_verdict_level_is_parsed(label):
    assert (
        parse_arena_hard_verdict(f"My own answer...\n\nMy final verdict is: [[{label}]]") == label
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No label at all. Assistant A is better.", None),
        ("[[A>B]] at first, but on reflection [[B>A]]", None),
        ("Verdict [[A>>B]]. Again: [[A>>B]]", "A>>B"),
        # Every label counts, quoted ones too: an echoed example makes the judgment ambiguous...
        ('Using the format "[[A=B]]", my final verdict is: [[A>B]]', None),
        # ...unless it is the same label as the verdict.
        (
            'Example output: "My final verdict is tie: [[A=B]]". My final verdict is tie: [[A=B]]',
            "A=B",
        ),
        ("Single brackets [A>B] do not count", None),
        ("[[A]]", None),
        ("[[a>b]]", None),
    ],
)
def test_verdict_is_the_one_distinct_label_like_arena_hard_autos_get_score(oracle, text, expected):
    assert parse_arena_hard_verdict(text) == expected
    reference, _ = oracle.extract_verdict(text)
    assert reference == expected or (expected is None and reference not in VERDICTS)


@pytest.mark.parametrize("mirrored", ["A<<B", "A<B", "B=A", "B<A", "B<<A"])
def test_a_mirrored_label_ends_the_judging_without_a_battle_as_in_v0_1(oracle, mirrored):
    import pandas as pd

    text = f"My final verdict: [[{mirrored}]]"
    assert parse_arena_hard_verdict(text) is None
    assert not lacks_verdict_label(text)  # a label: the judge is not asked again
    label, ask_again = oracle.extract_verdict(text)
    assert (label, ask_again) == (mirrored, False)
    row = pd.Series({"question_id": 1, "model": "m", "games": [{"score": label}, {"score": None}]})
    assert oracle.judgment_battles(row, "base") == []


def test_mirrored_and_canonical_spellings_together_are_ambiguous_as_in_the_reference():
    assert parse_arena_hard_verdict("[[A>B]] ... [[B<A]]") is None


@pytest.mark.parametrize(
    "text",
    [
        "No label at all. Assistant A is better.",
        "Single brackets [A>B] do not count",
        "[[A>B]] at first, but on reflection [[B>A]]",
        "[[A]]",
        "[[B<A]]",
        "[[A>>B]]",
        "[[a>b]]",
    ],
)
def test_the_judge_is_asked_again_exactly_when_the_reference_asks_again(oracle, text):
    assert lacks_verdict_label(text) == oracle.extract_verdict(text)[1]


def test_the_retry_turns_follow_the_judges_earlier_reply():
    messages = render_arena_hard_judge_prompt("Q", "one", "two", ["thinking, no label"])
    assert messages[2:] == [
        {"role": "assistant", "content": "thinking, no label"},
        {"role": "user", "content": JUDGE_RETRY_PROMPT},
    ]
    assert messages[:2] == render_arena_hard_judge_prompt("Q", "one", "two")


# -- battles --


def test_strong_verdicts_count_three_times_and_ties_once():
    assert battles_from_verdicts("m", "base", "A>>B", "A=B") == [("base", "m", "model_a")] * 3 + [
        ("base", "m", "tie")
    ]
    assert (
        battles_from_verdicts("m", "base", "B>A", "B>>A", weight=5)
        == [("base", "m", "model_b")] + [("base", "m", "model_a")] * 5
    )
    assert battles_from_verdicts("m", "base", None, None) == []


def test_game_two_swaps_the_sides_and_the_baseline_stays_model_a():
    assert battles_from_verdicts("m", "base", None, "A>B") == [("base", "m", "model_b")]
    assert battles_from_verdicts("m", "base", "A>B", None) == [("base", "m", "model_a")]


def test_unknown_verdict_is_rejected():
    with pytest.raises(ValueError, match="A<<B"):
        battles_from_verdicts("m", "base", "A<<B", None)


def test_battles_match_arena_hard_autos_get_battles_from_row(oracle):
    import pandas as pd

    labels = [*VERDICTS, None]
    for first in labels:
        for second in labels:
            row = pd.Series(
                {"question_id": 1, "model": "m", "games": [{"score": first}, {"score": second}]}
            )
            reference = oracle.judgment_battles(row, "base")
            expected = [(b["model_a"], b["model_b"], b["winner"]) for b in reference]
            assert battles_from_verdicts("m", "base", first, second) == expected, (first, second)


# -- style features --


def test_style_counts_match_arena_hard_autos_markdown_counter(oracle, judged):
    _, answers, _ = judged
    for answer in list(answers["strong-model"].values())[:50]:
        reference = oracle.markdown_counts(answer)
        expected = tuple(reference[key] for key in ("header_count", "list_count", "bold_count"))
        assert answer_style_counts(answer, 17) == (17, *expected)


def test_style_counts_skip_fenced_code():
    answer = "# Title\n```\n# comment\n- x\n**y**\n```\n- item\n**bold** and __bold__\n"
    assert answer_style_counts(answer, 9) == (9, 1, 1, 2)


def test_lengths_are_tiktoken_tokens_as_arena_hard_auto_counts_them(length_encoding):
    class Encoding:
        def encode(self, text, disallowed_special):
            assert disallowed_special == ()  # "<|endoftext|>" in an answer is plain text
            return list(text)

    length_encoding(Encoding)
    count, unit = arena_hard.answer_length_counter()
    assert (count("two words"), unit) == (9, "tiktoken gpt-3.5-turbo")


def test_lengths_are_words_when_the_encoding_cannot_load_and_that_is_logged_once(
    length_encoding, caplog
):
    def offline():
        raise OSError("no cached encoding and no internet")

    length_encoding(offline)
    for _ in range(2):
        count, unit = arena_hard.answer_length_counter()
        assert (count("three words here"), unit) == (3, "words")
    warnings = [r for r in caplog.records if "counts answer lengths in words" in r.getMessage()]
    assert len(warnings) == 1 and "no cached encoding" in warnings[0].getMessage()


# -- scores --


def test_scores_without_bootstrap_noise_are_the_bt_win_rates():
    battles = (
        [("base", "m", "model_b")] * 30
        + [("base", "m", "model_a")] * 10
        + [("base", "m", "tie")] * 20
    )

    scores = arena_hard_scores(battles, baseline="base", num_rounds=20)

    assert scores["m"]["score"] == pytest.approx(100 * 40 / 60)
    assert scores["base"] == {"score": 50.0, "lower": 50.0, "upper": 50.0}
    assert scores["m"]["lower"] < scores["m"]["score"] < scores["m"]["upper"]
    assert list(scores) == ["m", "base"]


def test_scores_reject_bad_input():
    with pytest.raises(ValueError, match="winner"):
        arena_hard_scores([("base", "m", "a")], baseline="base")
    with pytest.raises(ValueError, match="baseline"):
        arena_hard_scores([("x", "m", "tie")], baseline="base")
    with pytest.raises(ValueError, match="shape"):
        arena_hard_scores([("base", "m", "tie")], baseline="base", style_features=[[1, 2]])
    with pytest.raises(ValueError, match="vary"):
        arena_hard_scores(
            [("base", "m", "tie"), ("base", "m", "model_a")],
            baseline="base",
            style_features=[[[1.0], [2.0]], [[1.0], [2.0]]],
        )


def test_battles_match_the_oracles(oracle, judged):
    rows, _, counts = judged
    ours, _ = _our_battles(rows, counts)
    reference = _oracle_battles(oracle, rows, counts, style_control=False)

    assert ours == list(
        reference[["model_a", "model_b", "winner"]].itertuples(index=False, name=None)
    )
    assert {verdict for row in rows for verdict in row["games"]} == {*VERDICTS, None}
    assert {w for _, _, w in ours} == {"model_a", "model_b", "tie"}
    assert len(ours) > 3 * 2 * QUESTIONS


@pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning")
@pytest.mark.parametrize("style_control", [False, True])
def test_full_fit_is_scikit_learns_solution(oracle, judged, style_control):
    rows, _, counts = judged
    battles, style = _our_battles(rows, counts)
    reference = _oracle_battles(oracle, rows, counts, style_control)
    if style_control:
        ratings = oracle.style_controlled_ratings(reference, BASELINE)
    else:
        ratings = oracle.elo_ratings(reference, BASELINE)

    ours = arena_hard_scores(
        battles, BASELINE, num_rounds=1, style_features=style if style_control else None
    )

    for model, rating in ratings.items():
        expected = 100 / (1 + 10 ** ((ratings[BASELINE] - rating) / 400))
        # fit_bt keeps scikit-learn's default tol=1e-4; ours is the converged optimum.
        assert ours[model]["score"] == pytest.approx(expected, abs=0.01 if style_control else 1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning")
def test_scores_and_intervals_match_arena_hard_auto(oracle, judged):
    rows, _, counts = judged
    battles, _ = _our_battles(rows, counts)

    ours = arena_hard_scores(battles, baseline=BASELINE, num_rounds=100, seed=42)
    theirs = _oracle_scores(
        oracle, _oracle_battles(oracle, rows, counts, False), style_control=False
    )

    assert _max_delta(ours, theirs) < 0.01  # the README's tolerance
    assert list(ours) == sorted(theirs, key=lambda model: -theirs[model]["score"])
    assert list(ours)[0] == "strong-model" and list(ours)[-1] == "weak-model"


@pytest.mark.slow
def test_style_controlled_scores_and_intervals_match_arena_hard_auto(oracle, judged):
    rows, _, counts = judged
    battles, style = _our_battles(rows, counts)

    ours = arena_hard_scores(
        battles, baseline=BASELINE, num_rounds=100, seed=42, style_features=style
    )
    theirs = _oracle_scores(oracle, _oracle_battles(oracle, rows, counts, True), style_control=True)
    plain = arena_hard_scores(battles, baseline=BASELINE, num_rounds=100, seed=42)

    assert _max_delta(ours, theirs) < 0.01  # the README's tolerance
    # The most verbose model loses some of its lead, the least verbose gains.
    assert ours["strong-model"]["score"] < plain["strong-model"]["score"] - 1.0
    assert ours["weak-model"]["score"] > plain["weak-model"]["score"] + 1.0
