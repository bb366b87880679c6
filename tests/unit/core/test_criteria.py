"""Tests for moaa_ray.core.criteria: loading, prompting and parsing the criteria selection."""

from __future__ import annotations

import pytest

from moaa_ray.core.criteria import (
    Criterion,
    format_conversation,
    load_criteria,
    parse_criteria_selection,
    render_criteria_prompt,
    select_criteria_or_default,
)

CRITERIA = [
    Criterion("accuracy", "The answer is correct."),
    Criterion("clarity", "The answer is easy to read."),
    Criterion("safety", "The answer avoids harm."),
    Criterion("depth", "The answer is detailed."),
    Criterion("instruction following", "The answer obeys the instructions."),
]
MESSAGES = [{"role": "user", "content": "Explain photosynthesis to a child."}]


def test_default_criteria_file_loads_about_twelve_named_criteria():
    criteria = load_criteria()
    names = [criterion.name for criterion in criteria]
    assert 10 <= len(criteria) <= 14
    assert {"accuracy", "safety", "clarity", "instruction following"} <= set(names)
    assert all(criterion.description for criterion in criteria)


def test_user_criteria_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my list\n\nwit: The answer is funny.\n  brevity :  Short.  \n")
    assert load_criteria(path) == [
        Criterion("wit", "The answer is funny."),
        Criterion("brevity", "Short."),
    ]


def test_empty_criteria_file_error_names_the_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="empty.txt.*no criteria"):
        load_criteria(path)


@pytest.mark.parametrize(
    "bad_line", ["accuracy without colon", "accuracy:", ": no name", "**bold**: markup"]
)
def test_malformed_line_error_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "bad.txt"
    path.write_text(f"clarity: Fine.\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2"):
        load_criteria(path)


def test_duplicate_name_differing_only_in_case_and_dashes_is_rejected(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("instruction following: A.\nInstruction-Following: B.\n")
    with pytest.raises(ValueError, match="line 2.*twice"):
        load_criteria(path)


def test_format_conversation_labels_each_turn_in_order():
    text = format_conversation(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell a joke."},
        ]
    )
    assert (
        text == "[System]\nBe brief.\n\n[User]\nHi\n\n[Assistant]\nHello!\n\n[User]\nTell a joke."
    )


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "robot", "content": "x"}], [{"role": "user", "content": None}], ["hi"]],
)
def test_format_conversation_rejects_bad_messages(messages):
    with pytest.raises(ValueError):
        format_conversation(messages)


def test_criteria_prompt_shows_conversation_every_criterion_and_k():
    prompt = render_criteria_prompt(MESSAGES, CRITERIA, k=3)
    assert [message["role"] for message in prompt] == ["user"]
    content = prompt[0]["content"]
    assert "Explain photosynthesis to a child." in content
    for criterion in CRITERIA:
        assert f"- {criterion.name}: {criterion.description}" in content
    assert "Pick the 3 criteria" in content
    assert "$" not in content


def test_criteria_prompt_accepts_a_user_template(tmp_path):
    template = tmp_path / "select.txt"
    template.write_text("Q=$conversation K=$k C=$criteria")
    content = render_criteria_prompt(MESSAGES, CRITERIA[:1], k=2, template=str(template))[0][
        "content"
    ]
    assert (
        content
        == "Q=[User]\nExplain photosynthesis to a child. K=2 C=- accuracy: The answer is correct."
    )


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("accuracy\nclarity\nsafety", ["accuracy", "clarity", "safety"]),
        ("Safety, Accuracy, Depth", ["safety", "accuracy", "depth"]),
        ("1. **Clarity**\n2. **Accuracy**\n3. **Depth**", ["clarity", "accuracy", "depth"]),
        ("- depth\n* safety\n+ clarity", ["depth", "safety", "clarity"]),
        ("1) Instruction-Following\n2) ACCURACY", ["instruction following", "accuracy"]),
        ("instruction_following; clarity", ["instruction following", "clarity"]),
        ("The most relevant are accuracy, depth and clarity.", ["accuracy", "depth", "clarity"]),
        ("Criteria: depth, safety", ["depth", "safety"]),
    ],
)
def test_parse_criteria_selection_reads_common_list_styles(reply, expected):
    assert parse_criteria_selection(reply, CRITERIA, k=3) == expected


def test_parse_ignores_criteria_mentioned_only_in_descriptions():
    reply = (
        "1. Accuracy: a wrong fact matters more than clarity here\n"
        "2. Depth - needed for safety questions\n"
        "3. Safety (more than depth)"
    )
    assert parse_criteria_selection(reply, CRITERIA, k=3) == ["accuracy", "depth", "safety"]


def test_parse_keeps_first_appearance_dedups_and_caps_at_k():
    reply = "clarity\nClarity\naccuracy\nclarity\nsafety\ndepth"
    assert parse_criteria_selection(reply, CRITERIA, k=3) == ["clarity", "accuracy", "safety"]
    assert parse_criteria_selection(reply, CRITERIA, k=1) == ["clarity"]


def test_parse_returns_fewer_than_k_when_fewer_are_named():
    assert parse_criteria_selection("only safety matters", CRITERIA, k=3) == ["safety"]


def test_parse_ignores_unknown_names_and_partial_words():
    reply = "creativity\nclarityness\naccurate\nhelpfulness\ndepth"
    assert parse_criteria_selection(reply, CRITERIA, k=3) == ["depth"]


@pytest.mark.parametrize("reply", ["", "I cannot help with that.", "1.\n2.\n3.", "***"])
def test_parse_returns_none_when_no_known_criterion(reply):
    assert parse_criteria_selection(reply, CRITERIA, k=3) is None


def test_parse_rejects_non_positive_k():
    with pytest.raises(ValueError, match="k must be at least 1"):
        parse_criteria_selection("accuracy", CRITERIA, k=0)


def test_select_or_default_uses_the_parsed_selection():
    assert select_criteria_or_default("depth\nsafety", CRITERIA, 3, ["accuracy"]) == (
        ["depth", "safety"],
        False,
    )


@pytest.mark.parametrize("reply", ["no idea", None])
def test_select_or_default_falls_back_and_reports_it(reply):
    names, fell_back = select_criteria_or_default(
        reply, CRITERIA, 2, ["accuracy", "clarity", "depth"]
    )
    assert (names, fell_back) == (["accuracy", "clarity"], True)


def test_select_or_default_rejects_unknown_default_names():
    with pytest.raises(ValueError, match="helpfulness"):
        select_criteria_or_default("accuracy", CRITERIA, 3, ["accuracy", "helpfulness"])
