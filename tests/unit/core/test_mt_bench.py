"""MT-Bench single grading against FastChat's llm_judge, on the real MT-Bench files.

The oracle is FastChat's own code (``fschat==0.2.36``, tests/support/fastchat_llm_judge.py): the
matches its gen_judgment.py makes for the 80 real questions and GPT-4's reference answers
(tests/data/benchmarks), the requests and rating parse of its common.py, and the means of its
show_result.py. Its judge prompts are the package's copy of ``judge_prompts.jsonl`` (the wheel
ships none).
"""

import json
import math
from pathlib import Path

import pytest

from moaa_ray.config import load_config
from moaa_ray.core.benchmarks import load_mt_bench
from moaa_ray.core.mt_bench import (
    answer_temperature,
    expected_grade,
    judge_prompts,
    mt_bench_summary,
    parse_rating,
    render_grade_prompt,
)
from tests.support import fastchat_llm_judge

ROOT = Path(__file__).parents[3]
DATA = ROOT / "tests" / "data" / "benchmarks"


@pytest.fixture(scope="module")
def llm_judge():
    return fastchat_llm_judge.load_llm_judge()


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _answer(question_id, turn: int) -> str:
    """A made-up answer, with braces that must not be taken for format fields."""
    return f"Answer {turn} to question {question_id}: {{'x': {turn}}}"


def _judgment(messages: list[dict]) -> str:
    """A stand-in GPT-4's grade: a rating that depends on the request, or none at all."""
    rating = len(messages[1]["content"]) % 12
    return "Hard to say." if rating == 0 else f"Explanation.\nRating: [[{rating}]]"


@pytest.fixture(scope="module")
def fastchat_graded(llm_judge):
    """Every match FastChat makes for the real questions, graded by its own code: per match the
    question id, the turn, the request and FastChat's result row."""
    questions = _rows("mt_bench_question.jsonl")
    answers = {
        q["question_id"]: {"choices": [{"turns": [_answer(q["question_id"], t) for t in (1, 2)]}]}
        for q in questions
    }
    references = {r["question_id"]: r for r in _rows("mt_bench_reference_answer_gpt-4.jsonl")}
    matches = fastchat_llm_judge.single_matches(
        llm_judge, judge_prompts(), questions, answers, references
    )
    graded = []
    for match in matches:
        request, result = fastchat_llm_judge.play_single(llm_judge, match, _judgment)
        graded.append((str(match.question["question_id"]), result["turn"], request, result))
    return graded


def test_every_grading_request_is_fastchats_for_each_real_question_and_turn(
    questions, fastchat_graded
):
    assert len(fastchat_graded) == 160
    for question_id, turn, request, _ in fastchat_graded:
        question = questions[question_id]
        answers = [_answer(int(question_id), t) for t in (1, 2)]
        ours = render_grade_prompt(
            question.turns, answers, turn - 1, question.category, question.reference
        )
        assert ours == request["messages"], (question_id, turn)


def test_ratings_and_per_turn_means_are_fastchats(fastchat_graded, llm_judge, tmp_path):
    grades, results = [], []
    for _, turn, request, result in fastchat_graded:
        rating = parse_rating(_judgment(request["messages"]))
        assert rating == (None if result["score"] == -1 else result["score"])
        grades.append({"turn": turn, "score": rating})
        results.append({key: result[key] for key in ("model", "score", "turn")})
    assert any(result["score"] == -1 for result in results)  # some were left without a rating
    theirs = fastchat_llm_judge.single_means(llm_judge, results, tmp_path)
    summary = mt_bench_summary(grades)
    assert summary["per_turn"] == {
        1: pytest.approx(theirs[1], abs=1e-9),
        2: pytest.approx(theirs[2], abs=1e-9),
    }
    assert summary["overall"] == pytest.approx(theirs["overall"], abs=1e-9)


@pytest.fixture(scope="module")
def questions():
    return {
        q.question_id: q
        for q in load_mt_bench(
            DATA / "mt_bench_question.jsonl", DATA / "mt_bench_reference_answer_gpt-4.jsonl"
        )
    }


def test_the_official_config_answers_and_grades_mt_bench_at_fastchats_lengths(fastchat_graded):
    ev = load_config(ROOT / "configs" / "eval-official-judges.yaml").evaluate
    assert ev is not None and ev.grading_sampling is not None
    [mt_bench] = [bench for bench in ev.benchmarks if bench.key() == "mt_bench"]
    assert mt_bench.max_new_tokens == fastchat_llm_judge.answer_max_new_tokens() == 1024
    requests = {(r["temperature"], r["max_tokens"]) for _, _, r, _ in fastchat_graded}
    grading = ev.grading_sampling
    assert requests == {(grading.temperature, grading.max_new_tokens)} == {(0, 2048)}
    assert grading.seed is None  # FastChat's request has none


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
    "text",
    [
        "Good.\nRating: [[7]]",
        "Rating: [[8.5]]",
        "Rating: [[7.]]",
        "First [[3]] then [[9]]",  # the first match
        "Rating: [6]",  # the backup pattern
        "[[2]] and [10]",
        "[10] and [[2]]",  # [[N]] anywhere before [N]
        "Rating: [[11]]",  # not clamped
        "Rating: [[ 7 ]]",
        "Rating: 7/10",  # -1 in FastChat: left out of the means
        "",
    ],
)
def test_parse_rating_is_fastchats(llm_judge, text):
    [match] = [
        m
        for m in fastchat_llm_judge.single_matches(
            llm_judge,
            judge_prompts(),
            [{"question_id": 1, "category": "writing", "turns": ["q"]}],
            {1: {"choices": [{"turns": ["a"]}]}},
            {},
        )
        if not m.multi_turn
    ]
    _, result = fastchat_llm_judge.play_single(llm_judge, match, lambda messages: text)
    assert parse_rating(text) == (None if result["score"] == -1 else result["score"])


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
