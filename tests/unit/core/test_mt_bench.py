"""MT-Bench single grading against FastChat's llm_judge, on the real MT-Bench files.

The oracles are FastChat's own data: its judge prompts (``judge_prompts.jsonl``, copied verbatim
into the package), the 80 real questions and GPT-4's reference answers (tests/data/benchmarks),
and the rules of ``fastchat/llm_judge/common.py`` (rating patterns, temperatures, the categories
graded against a reference) written out here as FastChat states them.
"""

import math
from pathlib import Path

import pytest

from moaa_ray.core.benchmarks import load_mt_bench
from moaa_ray.core.mt_bench import (
    answer_temperature,
    expected_grade,
    judge_prompts,
    mt_bench_summary,
    parse_rating,
    render_grade_prompt,
)

DATA = Path(__file__).parents[2] / "data" / "benchmarks"


@pytest.fixture(scope="module")
def questions():
    return {
        q.question_id: q
        for q in load_mt_bench(
            DATA / "mt_bench_question.jsonl", DATA / "mt_bench_reference_answer_gpt-4.jsonl"
        )
    }


def test_the_four_single_grading_prompts_are_fastchats():
    prompts = judge_prompts()
    assert sorted(prompts) == [
        "single-math-v1",
        "single-math-v1-multi-turn",
        "single-v1",
        "single-v1-multi-turn",
    ]
    assert prompts["single-v1"]["system_prompt"] == "You are a helpful assistant."
    assert "{ref_answer_2}" in prompts["single-math-v1-multi-turn"]["prompt_template"]
    assert (
        "focus on the assistant's answer to the second"
        in (prompts["single-v1-multi-turn"]["system_prompt"])
    )


def test_first_turn_of_a_writing_question_uses_single_v1(questions):
    question = questions["81"]  # writing: a travel blog post
    messages = render_grade_prompt(question.turns, ["My blog post.", "Again."], 0, "writing")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == judge_prompts()["single-v1"]["prompt_template"].format(
        question=question.turns[0], answer="My blog post."
    )
    assert "Reference" not in messages[1]["content"]


def test_math_questions_are_graded_against_gpt4s_reference_on_both_turns(questions):
    math_questions = [q for q in questions.values() if q.category == "math"]
    assert len(math_questions) == 10
    question = math_questions[0]
    assert question.reference is not None and len(question.reference) == 2
    first = render_grade_prompt(question.turns, ["a1", "a2"], 0, "math", question.reference)
    assert "[The Start of Reference Answer]\n" + question.reference[0] in first[1]["content"]
    second = render_grade_prompt(question.turns, ["a1", "a2"], 1, "math", question.reference)
    assert second[0]["content"] == judge_prompts()["single-math-v1-multi-turn"]["system_prompt"]
    content = second[1]["content"]
    for text in (*question.turns, *question.reference, "a1", "a2"):
        assert text in content
    assert content.index(question.reference[1]) < content.index("### Assistant A:\na1")


def test_every_real_question_that_needs_a_reference_has_one(questions):
    needing = [q for q in questions.values() if q.category in ("math", "reasoning", "coding")]
    assert len(needing) == 30
    for question in needing:
        for turn in (0, 1):
            render_grade_prompt(
                question.turns, ["x", "y"], turn, question.category, question.reference
            )


def test_a_reference_category_without_reference_is_refused():
    with pytest.raises(ValueError, match="reference_answers_path"):
        render_grade_prompt(["q1", "q2"], ["a1", "a2"], 1, "coding", None)


def test_answers_with_braces_are_not_format_fields():
    messages = render_grade_prompt(["q {x}"], ["def f(): return {'a': 1}"], 0, "stem")
    assert "def f(): return {'a': 1}" in messages[1]["content"]


@pytest.mark.parametrize(
    ("category", "temperature"),
    [
        ("writing", 0.7),
        ("roleplay", 0.7),
        ("extraction", 0.0),
        ("math", 0.0),
        ("coding", 0.0),
        ("reasoning", 0.0),
        ("stem", 0.1),
        ("humanities", 0.1),
        ("unknown", 0.7),
        (None, 0.7),
    ],
)
def test_answer_temperature_per_category_is_fastchats(category, temperature):
    assert answer_temperature(category) == temperature


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Good.\nRating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("First [[3]] then [[9]]", 3.0),  # FastChat takes the first match
        ("Rating: [6]", 6.0),  # the backup pattern
        ("[[2]] and [10]", 2.0),
        ("Rating: [[11]]", 11.0),  # not clamped, as FastChat does not clamp
        ("Rating: 7/10", None),  # -1 in FastChat: left out of the means
        ("", None),
    ],
)
def test_parse_rating_follows_fastchats_patterns(text, rating):
    assert parse_rating(text) == rating


def test_summary_means_per_turn_category_and_overall_leaving_out_missing_ratings():
    grades = [
        {"turn": 1, "category": "math", "score": 8.0},
        {"turn": 2, "category": "math", "score": 4.0},
        {"turn": 1, "category": "writing", "score": 6.0},
        {"turn": 2, "category": "writing", "score": None},
    ]
    summary = mt_bench_summary(grades)
    assert summary["per_turn"] == {1: 7.0, 2: 4.0}
    assert summary["per_category"] == {"math": 6.0, "writing": 6.0}
    assert summary["overall"] == pytest.approx(6.0)
    assert (summary["num_graded"], summary["num_missing"]) == (3, 1)
    assert math.isnan(mt_bench_summary([{"turn": 1, "score": None}])["overall"])
    with pytest.raises(ValueError, match="needs 'turn' and 'score'"):
        mt_bench_summary([{"turn": 1}])


def test_expected_grade_from_choice_logprobs():
    certain_seven = [-math.inf] * 6 + [0.0] + [-math.inf] * 3
    assert expected_grade(certain_seven, None) == pytest.approx(7.0)
    assert expected_grade([0.0] * 9 + [-math.inf], None) == pytest.approx(5.0)
    shared = [0.0] + [-math.inf] * 8 + [0.0]  # "10" shares the token of "1"
    assert expected_grade(shared, [0.0, -math.inf]) == pytest.approx(10.0)
    assert expected_grade(shared, [-math.inf, 0.0]) == pytest.approx(1.0)
    assert expected_grade([-math.inf] * 10, None) is None
