"""Row schemas shared by every stage, and validation of input rows.

Every row carries a stable ``row_id`` (a hash of its prompt side), so a stage can be resubmitted and
process only the ids it has not written yet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypedDict

from typing_extensions import NotRequired

from moaa_ray.core.conversations import ROLES


@dataclass(frozen=True)
class Reject:
    """A row a stage did not write, and why; one line of ``<stage>/rejects.jsonl``.

    ``failed`` marks an engine failure that outlived its retries: not data about the row, so the
    next run of the same command tries the row again. Other rejects (bad input, unusable output)
    stay rejected.
    """

    source: str
    index: int
    reason: str
    row_id: str | None = None
    failed: bool = False


class RowStatus(TypedDict):
    """The status keys every stage's row state has."""

    error: str | None  # why the row has no output (later steps skip it); None while it is fine
    failed: NotRequired[bool]  # present (True) once an engine call failed: see mark_failed


def mark_failed(state: RowStatus, reason: str) -> None:
    """Mark a row state whose engine call failed after its retries (``error`` and ``failed``).

    Later steps skip it (``error`` is set), and the stage writes it as a failed :class:`Reject`,
    never as data: no made-up score, verdict or reference stands in for the missing answer.
    """
    state["error"] = state.get("error") or reason
    state["failed"] = True


class RowError(ValueError):
    """Why an input row cannot be used; the row goes to the rejects file with this reason."""


def compute_row_id(messages: list[dict[str, str]]) -> str:
    """A stable id for a conversation: sha256 of its system and user turns (answers are regenerated)."""
    prompt_side = [(m["role"], m["content"]) for m in messages if m["role"] != "assistant"]
    digest = hashlib.sha256(json.dumps(prompt_side, ensure_ascii=False).encode())
    return digest.hexdigest()[:24]


def conversation_from_row(
    row: dict[str, Any],
    *,
    prompt_column: str,
    messages_column: str | None,
    system_column: str | None,
    max_prompt_chars: int,
) -> list[dict[str, str]]:
    """Turn one input row into a chat conversation.

    Args:
        row: the raw row.
        prompt_column: column holding a single-turn prompt (used when ``messages_column`` is None).
        messages_column: column holding a list of ``{"role", "content"}`` messages.
        system_column: optional column holding a system prompt.
        max_prompt_chars: conversations with more characters are rejected.

    Returns:
        Messages in the one shape every stage relies on: an optional system turn first, then user and
        assistant turns strictly alternating, starting with a user turn. The last turn is the user's,
        or an assistant turn: ``generate`` regenerates every assistant turn and ``preferences``
        drops trailing ones and answers the last user turn, so its text is never used as an answer.

    Raises:
        RowError: missing or null column, empty or non-text content, text that is not valid Unicode
            (a lone surrogate such as ``"\\ud83d"``), roles out of that shape, or over the length limit.
    """
    if messages_column is not None:
        messages = _messages(_column(row, messages_column))
    else:
        messages = [{"role": "user", "content": _text(_column(row, prompt_column), prompt_column)}]
    if system_column is not None and row.get(system_column):
        system = _text(row[system_column], system_column)
        messages = [{"role": "system", "content": system}] + [
            m for m in messages if m["role"] != "system"
        ]
    total = sum(len(m["content"]) for m in messages)
    if total > max_prompt_chars:
        raise RowError(
            f"conversation has {total} characters, over max_prompt_chars={max_prompt_chars}"
        )
    return messages


def _column(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise RowError(f"missing column {name!r}")
    if row[name] is None:
        raise RowError(f"{name} is null")
    return row[name]


def _text(value: Any, where: str) -> str:
    if value is None:
        raise RowError(f"{where} is null")
    if not isinstance(value, str):
        raise RowError(f"{where}: expected text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"{where}: empty text")
    return _unicode(value, where)


def _unicode(value: str, where: str) -> str:
    """``value`` unchanged, or RowError when it holds a lone surrogate (JSON allows ``"\\ud83d"``).

    Such text cannot be encoded as UTF-8, so no row id, Parquet file or engine could take it.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = f"\\u{ord(value[exc.start]):04x}"
        raise RowError(
            f"{where}: lone surrogate {code} at character {exc.start}: not valid Unicode"
        ) from None
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError("messages: expected a non-empty list of {role, content}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RowError(f"messages[{i}]: expected a role in {ROLES}")
        content, where = message.get("content"), f"messages[{i}].content"
        if message["role"] == "assistant" and isinstance(content, str):
            content = _unicode(content, where)  # regenerated, so it may be empty
        else:
            content = _text(content, where)
        messages.append({"role": message["role"], "content": content})
    if not any(m["role"] == "user" for m in messages):
        raise RowError("messages: no user turn")
    _check_roles([m["role"] for m in messages])
    return messages


def _check_roles(roles: list[str]) -> None:
    """RowError unless ``roles`` read ``[system], user, assistant, user, ...`` (see above)."""
    start = 1 if roles[0] == "system" else 0
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] == "system":
            raise RowError(f"messages[{i}]: a system turn may only come first")
        if roles[i] != expected:  # the turns before alternate, so this one repeats the last role
            what = (
                f"two {roles[i]} turns in a row" if i > start else "starts with an assistant turn"
            )
            raise RowError(
                f"messages[{i}]: {what}; user and assistant turns must alternate, starting with a "
                "user turn"
            )


def sft_schema():
    """Arrow schema of the SFT dataset: TRL's conversational ``messages`` plus provenance
    (``teacher``: the model whose answers are the targets; ``teacher_scores``: best_of_n's reward
    of each last-layer answer, by slot)."""
    import pyarrow as pa

    proposal = pa.struct(
        [
            ("turn", pa.int32()),
            ("layer", pa.int32()),
            ("slot", pa.int32()),
            ("model", pa.string()),
            ("content", pa.string()),
            ("error", pa.string()),
            ("truncated", pa.bool_()),
        ]
    )
    return pa.schema(
        [
            ("row_id", pa.string()),
            ("messages", _message_list()),
            ("proposals", pa.list_(proposal)),
            ("models", pa.list_(pa.string())),
            ("sampling", pa.string()),
            ("source", pa.string()),
            ("teacher", pa.string()),
            ("teacher_scores", pa.list_(pa.float64())),
            ("dropped_references", pa.int32()),
        ]
    )


def _message_list():
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def preference_schema():
    """Arrow schema of the DPO dataset: TRL's conversational prompt / chosen / rejected, plus scores
    (and a pairwise source's K x K table of raw scores, null for other sources)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.string()),
            ("prompt", _message_list()),
            ("chosen", _message_list()),
            ("rejected", _message_list()),
            ("score_chosen", pa.float64()),
            ("score_rejected", pa.float64()),
            ("samples", pa.list_(pa.string())),
            ("scores", pa.list_(pa.float64())),
            ("chosen_index", pa.int64()),  # the chosen answer's place in samples
            ("rejected_index", pa.int64()),
            # P(sample i beats sample j), K x K; null where a pair has no verdict
            ("win_probabilities", _table()),
            ("criteria", pa.list_(pa.string())),
            ("source", pa.string()),
            ("stats", pa.string()),
            # a pairwise reward model's raw K x K table (core.general_preference); else null
            ("preference_table", _table()),
        ]
    )


def _table():
    import pyarrow as pa

    return pa.list_(pa.list_(pa.float64()))


def dropped_schema():
    """Arrow schema of prompts the preference stage dropped, with the reason, their samples and a
    pairwise source's table (as in :func:`preference_schema`)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.string()),
            ("reason", pa.string()),
            ("stats", pa.string()),
            ("prompt", _message_list()),
            ("samples", pa.list_(pa.string())),
            ("preference_table", _table()),
        ]
    )


def judgment_schema():
    """Arrow schema of the judgment audit table: one row per judge call."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.string()),
            ("judge", pa.string()),
            ("sample_x", pa.int32()),
            ("sample_y", pa.int32()),
            ("order", pa.string()),
            ("criteria", pa.list_(pa.string())),
            ("verdict", pa.string()),
            ("p_a", pa.float64()),
            ("raw", pa.string()),
        ]
    )
