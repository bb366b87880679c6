import json
import logging
from pathlib import Path

import pytest

from moaa_ray.core.benchmarks import (
    BenchmarkQuestion,
    load_alpaca_eval,
    load_arena_hard,
    load_eval_questions,
    load_mt_bench,
    load_verified,
)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


MT_BENCH_ROWS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]},
    {
        "question_id": 111,
        "category": "math",
        "turns": ["Area of the triangle?", "Area of the circle?"],
        "reference": ["Area is 3", "5pi"],
    },
    {"question_id": 121, "category": "coding", "turns": ["Write a function.", "Make it faster."]},
]


def test_load_mt_bench_reads_turns_categories_and_inline_references(tmp_path):
    path = _write_jsonl(tmp_path / "question.jsonl", MT_BENCH_ROWS)

    questions = load_mt_bench(path)

    assert [q.question_id for q in questions] == ["81", "111", "121"]
    assert questions[0] == BenchmarkQuestion(
        question_id="81", turns=["Write a blog post.", "Rewrite it."], category="writing"
    )
    assert questions[1].reference == ["Area is 3", "5pi"]


def test_load_mt_bench_reference_file_overrides_inline_references(tmp_path):
    questions_path = _write_jsonl(tmp_path / "question.jsonl", MT_BENCH_ROWS)
    references_path = _write_jsonl(
        tmp_path / "gpt-4.jsonl",
        [
            {
                "question_id": 111,
                "model_id": "gpt-4",
                "choices": [{"index": 0, "turns": ["4", "9"]}],
            },
            {
                "question_id": 121,
                "model_id": "gpt-4",
                "choices": [{"index": 0, "turns": ["d", "e"]}],
            },
        ],
    )

    questions = load_mt_bench(questions_path, references_path)

    assert [q.reference for q in questions] == [None, ["4", "9"], ["d", "e"]]


def test_load_arena_hard_current_format_with_baseline_messages(tmp_path):
    questions_path = _write_jsonl(
        tmp_path / "question.jsonl",
        [
            {
                "uid": "u1",
                "category": "arena-hard-v0.1",
                "cluster": "Puzzles",
                "prompt": "Solve it.",
            },
            {"uid": "u2", "category": "arena-hard-v0.1", "cluster": "Code", "prompt": "Code it."},
        ],
    )
    answers_path = _write_jsonl(
        tmp_path / "gpt-4-0314.jsonl",
        [
            {
                "uid": uid,
                "ans_id": "x",
                "model": "gpt-4-0314",
                "messages": [
                    {"role": "user", "content": "ignored"},
                    {"role": "assistant", "content": {"answer": f"answer {uid}"}},
                ],
            }
            for uid in ("u2", "u1")
        ],
    )

    questions = load_arena_hard(questions_path, answers_path)

    assert questions == [
        BenchmarkQuestion("u1", ["Solve it."], "arena-hard-v0.1", None, ["answer u1"]),
        BenchmarkQuestion("u2", ["Code it."], "arena-hard-v0.1", None, ["answer u2"]),
    ]


def test_load_arena_hard_older_format_with_choices_answers(tmp_path):
    questions_path = _write_jsonl(
        tmp_path / "question.jsonl",
        [{"question_id": "q1", "category": "arena-hard-v0.1", "turns": [{"content": "Hi?"}]}],
    )
    answers_path = _write_jsonl(
        tmp_path / "baseline.jsonl",
        [
            {
                "question_id": "q1",
                "choices": [{"index": 0, "turns": [{"content": "Hello", "token_len": 2}]}],
            }
        ],
    )

    questions = load_arena_hard(questions_path, answers_path)

    assert questions == [BenchmarkQuestion("q1", ["Hi?"], "arena-hard-v0.1", None, ["Hello"])]


def test_load_arena_hard_warns_about_questions_without_baseline(tmp_path, caplog):
    questions_path = _write_jsonl(
        tmp_path / "question.jsonl", [{"uid": "u1", "prompt": "a"}, {"uid": "u2", "prompt": "b"}]
    )
    answers_path = _write_jsonl(
        tmp_path / "base.jsonl",
        [{"uid": "u1", "messages": [{"role": "assistant", "content": "only one"}]}],
    )

    with caplog.at_level(logging.WARNING):
        questions = load_arena_hard(questions_path, answers_path)

    assert [q.baseline_answer for q in questions] == [["only one"], None]
    assert "1 questions have no baseline_answer" in caplog.text


ALPACA_ROWS = [
    {"dataset": "helpful_base", "instruction": "Name actors.", "output": "Hugh.", "generator": "g"},
    {"dataset": "vicuna", "instruction": "Write a review.", "output": "Great.", "generator": "g"},
]


def test_load_alpaca_eval_json_list_keeps_baseline_outputs(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(ALPACA_ROWS, indent=2), encoding="utf-8")

    questions = load_alpaca_eval(path)

    assert questions == [
        BenchmarkQuestion("0", ["Name actors."], "helpful_base", None, ["Hugh."]),
        BenchmarkQuestion("1", ["Write a review."], "vicuna", None, ["Great."]),
    ]


def test_load_alpaca_eval_jsonl_without_outputs(tmp_path):
    path = _write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": "Hi"}, {"instruction": "Yo"}])

    questions = load_alpaca_eval(path)

    assert [(q.turns, q.baseline_answer, q.category) for q in questions] == [
        (["Hi"], None, None),
        (["Yo"], None, None),
    ]


def test_load_eval_questions_detects_each_format(tmp_path):
    mt_bench = _write_jsonl(tmp_path / "mt.jsonl", MT_BENCH_ROWS)
    arena = _write_jsonl(tmp_path / "arena.jsonl", [{"uid": "u1", "prompt": "p"}])
    arena_old = _write_jsonl(
        tmp_path / "old.jsonl", [{"question_id": 1, "turns": [{"content": "p"}]}]
    )
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps(ALPACA_ROWS), encoding="utf-8")

    assert load_eval_questions(mt_bench) == load_mt_bench(mt_bench)
    assert load_eval_questions(arena) == load_arena_hard(arena)
    assert load_eval_questions(arena_old)[0].turns == ["p"]
    assert load_eval_questions(alpaca) == load_alpaca_eval(alpaca)


def test_load_eval_questions_dispatches_answer_files(tmp_path):
    questions_path = _write_jsonl(tmp_path / "q.jsonl", [{"uid": "u1", "prompt": "p"}])
    answers_path = _write_jsonl(
        tmp_path / "a.jsonl", [{"uid": "u1", "messages": [{"role": "assistant", "content": "x"}]}]
    )

    questions = load_eval_questions(
        questions_path, format="arena_hard", baseline_answers_path=answers_path
    )

    assert questions[0].baseline_answer == ["x"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "squad"}, "unknown benchmark format 'squad'"),
        ({"baseline_answers_path": "x.jsonl"}, "baseline_answers_path applies to arena_hard"),
        ({"reference_answers_path": "x.jsonl", "format": "alpaca_eval"}, "applies to mt_bench"),
    ],
)
def test_load_eval_questions_rejects_bad_arguments(tmp_path, kwargs, message):
    path = _write_jsonl(tmp_path / "mt.jsonl", MT_BENCH_ROWS)

    with pytest.raises(ValueError, match=message):
        load_eval_questions(path, **kwargs)


def test_load_eval_questions_names_an_undetectable_file(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])

    with pytest.raises(ValueError, match=r"odd\.jsonl:1: cannot tell the benchmark format"):
        load_eval_questions(path)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text(json.dumps(MT_BENCH_ROWS[0]) + "\n\n{not json\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"question\.jsonl:3: invalid JSON"):
        load_mt_bench(path)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"question_id": 9, "turns": []}, "'turns' must be a non-empty list of strings"),
        ({"question_id": 9, "turns": ["a", 2]}, "'turns' must be a non-empty list of strings"),
        ({"turns": ["a"]}, "'question_id' must be a non-empty string"),
        ({"question_id": 9, "turns": ["a"], "category": 3}, "'category' must be"),
        ({"question_id": 9, "turns": ["a"], "reference": "r"}, "'reference' must be"),
        (["not", "an", "object"], "expected a JSON object, got list"),
    ],
)
def test_bad_mt_bench_row_names_file_and_line(tmp_path, bad_row, message):
    path = _write_jsonl(tmp_path / "question.jsonl", [MT_BENCH_ROWS[0], bad_row])

    with pytest.raises(ValueError, match=rf"question\.jsonl:2: {message}"):
        load_mt_bench(path)


def test_bad_reference_row_names_the_reference_file_and_line(tmp_path):
    questions_path = _write_jsonl(tmp_path / "question.jsonl", MT_BENCH_ROWS)
    references_path = _write_jsonl(tmp_path / "ref.jsonl", [{"question_id": 111, "choices": []}])

    with pytest.raises(ValueError, match=r"ref\.jsonl:1: answer row needs 'choices\[0\]\.turns'"):
        load_mt_bench(questions_path, references_path)


def test_bad_baseline_row_names_the_answer_file_and_line(tmp_path):
    questions_path = _write_jsonl(tmp_path / "question.jsonl", [{"uid": "u1", "prompt": "p"}])
    answers_path = _write_jsonl(
        tmp_path / "base.jsonl",
        [
            {"uid": "u0", "messages": [{"role": "assistant", "content": "fine"}]},
            {
                "uid": "u1",
                "messages": [{"role": "assistant", "content": {"text": "no answer key"}}],
            },
        ],
    )

    with pytest.raises(ValueError, match=r"base\.jsonl:2: 'assistant messages' must be"):
        load_arena_hard(questions_path, answers_path)


def test_bad_alpaca_eval_item_names_its_line_in_the_json_list(tmp_path):
    path = tmp_path / "outputs.json"
    rows = [*ALPACA_ROWS, {"dataset": "x", "output": "no instruction"}]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    bad_line = path.read_text().splitlines().index("  {", 10) + 1

    with pytest.raises(ValueError, match=rf"outputs\.json:{bad_line}: 'instruction' must be"):
        load_alpaca_eval(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n{"instruction": "a"}\n{"instruction": "b"}\n]', r":3: expected ',' or '\]'"),
        ('[\n{"instruction": "a"},\n{"instruction": \n', r":4: invalid JSON"),
        ('[\n{"instruction": "a"}\n', ":3: JSON list is not closed"),
    ],
)
def test_malformed_json_list_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "outputs.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ValueError, match=rf"outputs\.json{message}"):
        load_alpaca_eval(path)


def test_duplicate_question_ids_are_rejected(tmp_path):
    path = _write_jsonl(tmp_path / "question.jsonl", [{"uid": "u1", "prompt": "a"}] * 2)

    with pytest.raises(
        ValueError, match=r"question\.jsonl:2: duplicate question id .u1. \(first on line 1\)"
    ):
        load_arena_hard(path)


def test_empty_question_file_is_rejected(tmp_path):
    path = tmp_path / "question.jsonl"
    path.write_text("\n", encoding="utf-8")

    with pytest.raises(ValueError, match="no questions"):
        load_mt_bench(path)


def test_load_verified_reads_prompts_and_turns_with_ids_or_row_indices(tmp_path):
    path = _write_jsonl(
        tmp_path / "addition.jsonl",
        [
            {"id": "eval-2+3", "prompt": "What is 2 + 3?", "answer": "5"},
            {"question_id": 7, "turns": ["What is 1 + 1?", "And 2 + 2?"], "category": "math"},
            {"prompt": "What is 4 + 4?"},
        ],
    )

    questions = load_eval_questions(path, format="verified")

    assert questions == [
        BenchmarkQuestion("eval-2+3", ["What is 2 + 3?"]),
        BenchmarkQuestion("7", ["What is 1 + 1?", "And 2 + 2?"], "math"),
        BenchmarkQuestion("2", ["What is 4 + 4?"]),
    ]


def test_load_verified_reads_a_json_list(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}], indent=2), encoding="utf-8")

    assert [q.question_id for q in load_verified(path)] == ["0", "1"]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"id": "x"}, r"a verified row needs exactly one of 'prompt' \(a string\) and 'turns'"),
        ({"prompt": "a", "turns": ["a"]}, "a verified row needs exactly one of"),
        ({"prompt": ""}, "'prompt' must be a non-empty string"),
        ({"turns": [{"content": "a"}]}, "'turns' must be a non-empty list of strings"),
        ({"id": None, "prompt": "a"}, "'id' must be a non-empty string"),
        ({"id": "first", "prompt": "again"}, "duplicate question id 'first'"),
        ("What is 1 + 1?", "expected a JSON object, got str"),
    ],
)
def test_bad_verified_row_names_file_and_line(tmp_path, bad_row, message):
    path = _write_jsonl(tmp_path / "prompts.jsonl", [{"id": "first", "prompt": "ok"}, bad_row])

    with pytest.raises(ValueError, match=rf"prompts\.jsonl:2: {message}"):
        load_verified(path)


def test_auto_detection_never_takes_verified_prompts_for_arena_hard(tmp_path):
    path = _write_jsonl(tmp_path / "addition.jsonl", [{"id": "a", "prompt": "What is 1 + 2?"}])

    with pytest.raises(ValueError, match=r"addition\.jsonl:1: .*need format 'verified'"):
        load_eval_questions(path)
    assert load_eval_questions(path, format="verified")[0].question_id == "a"


def test_verified_takes_no_answer_files(tmp_path):
    path = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}])

    with pytest.raises(
        ValueError, match="baseline_answers_path applies to arena_hard, not verified"
    ):
        load_eval_questions(path, format="verified", baseline_answers_path="x.jsonl")


# The benchmarks' own files (excerpts; tests/data/benchmarks/README.md says where from).
REAL = Path(__file__).parents[2] / "data" / "benchmarks"


def test_the_real_mt_bench_files_load_with_gpt4_references_for_math_reasoning_and_coding():
    questions = load_eval_questions(
        REAL / "mt_bench_question.jsonl",
        reference_answers_path=REAL / "mt_bench_reference_answer_gpt-4.jsonl",
    )
    assert len(questions) == 80 and all(len(q.turns) == 2 for q in questions)
    categories = {q.category for q in questions}
    assert categories == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"
    }  # fmt: skip
    with_reference = {q.category for q in questions if q.reference}
    assert {"math", "reasoning", "coding"} <= with_reference
    assert all(len(q.reference or []) == 2 for q in questions if q.category == "math")


def test_the_real_arena_hard_files_load_with_gpt4_0314_answers():
    questions = load_eval_questions(
        REAL / "arena_hard_v0.1_question.jsonl",
        baseline_answers_path=REAL / "arena_hard_v0.1_model_answer_gpt-4-0314.jsonl",
    )
    assert len(questions) == 24
    first = questions[0]
    assert first.question_id == "328c149ed45a41c0b9d6f14659e63599"
    assert first.turns[0].startswith("Use ABC notation")
    assert all(q.baseline_answer and len(q.baseline_answer[0]) > 100 for q in questions)


def test_the_real_alpaca_eval_file_loads_with_the_gpt4_turbo_baseline():
    questions = load_eval_questions(REAL / "alpaca_eval_gpt4_1106_preview_outputs.json")
    assert len(questions) == 24 and questions[0].category == "helpful_base"
    assert questions[0].turns == [
        "What are the names of some famous actors that started their careers on Broadway?"
    ]
    assert questions[0].baseline_answer and questions[0].baseline_answer[0].startswith("Several")
