import pytest

from moaa_ray.records import RowError, compute_row_id, conversation_from_row

COLUMNS = {"prompt_column": "prompt", "messages_column": None, "system_column": None}
USER = {"role": "user", "content": "Q"}
ANSWER = {"role": "assistant", "content": "A"}


def convert(row, **overrides):
    return conversation_from_row(row, **{**COLUMNS, "max_prompt_chars": 100, **overrides})


def test_prompt_row_becomes_a_user_turn():
    assert convert({"prompt": "Hi"}) == [{"role": "user", "content": "Hi"}]


def test_system_column_is_prepended():
    messages = convert({"prompt": "Hi", "sys": "Be brief."}, system_column="sys")
    assert messages[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({}, "missing column 'prompt'"),
        ({"prompt": None}, "^prompt is null$"),
        ({"prompt": "smile \ud83d"}, r"prompt: lone surrogate \\ud83d at character 6"),
        ({"prompt": "   "}, "empty text"),
        ({"prompt": 42}, "expected text, got int"),
        ({"prompt": "x" * 101}, "over max_prompt_chars=100"),
    ],
)
def test_bad_prompt_rows_are_rejected_with_a_reason(row, reason):
    with pytest.raises(RowError, match=reason):
        convert(row)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ("hello", "non-empty list"),
        ([{"role": "bot", "content": "x"}], "expected a role"),
        ([{"role": "assistant", "content": "x"}], "no user turn"),
        ([{"role": "user", "content": ""}], "empty text"),
        ([{"role": "user", "content": None}], r"messages\[0\]\.content is null"),
        (
            [USER, {"role": "system", "content": "x"}],
            r"messages\[1\]: a system turn may only come first",
        ),
        (
            [USER, USER],
            r"messages\[1\]: two user turns in a row; user and assistant turns must alternate",
        ),
        (
            [{"role": "assistant", "content": "a"}, USER],
            r"messages\[0\]: starts with an assistant turn",
        ),
        ([USER, ANSWER, ANSWER], r"messages\[2\]: two assistant turns in a row"),
        (
            [USER, {"role": "assistant", "content": "\udc00"}],
            r"messages\[1\]\.content: lone surrogate",
        ),
    ],
)
def test_bad_conversations_are_rejected(messages, reason):
    with pytest.raises(RowError, match=reason):
        convert({"messages": messages}, messages_column="messages")


@pytest.mark.parametrize(
    "roles",
    [
        ["user"],
        ["system", "user"],
        ["user", "assistant"],  # a trailing answer: generate regenerates it, preferences drops it
        ["system", "user", "assistant", "user"],
    ],
)
def test_alternating_conversations_are_kept_as_given(roles):
    messages = [{"role": role, "content": f"{role} {i}"} for i, role in enumerate(roles)]
    assert convert({"messages": messages}, messages_column="messages") == messages


def test_row_id_ignores_assistant_text_but_not_user_text():
    a = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "old"}]
    b = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "new"}]
    c = [{"role": "user", "content": "Q?"}]
    assert compute_row_id(a) == compute_row_id(b)
    assert compute_row_id(a) != compute_row_id(c)
    assert compute_row_id(a) == compute_row_id([dict(m) for m in a])  # stable
