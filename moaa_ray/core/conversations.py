"""Conversations shaped for the chat template that renders them.

Model families disagree on roles: Gemma's templates refuse a system message, Mistral's demand strict
user/assistant alternation, ChatML takes anything. The pipeline writes one shape (an optional system
turn, then alternating user and assistant turns); an engine checks once per model what its template
accepts and passes each conversation through :func:`conform` before rendering it.
"""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, str]]  # a conversation: ``{"role", "content"}`` turns, in order
ROLES = ("system", "user", "assistant")  # the roles a stored or requested message may have

_PROBE = "moaa-system-probe"


def template_accepts_system(tokenizer: Any) -> bool:
    """Whether a tokenizer's chat template renders a system message, rather than refusing or dropping it.

    Args:
        tokenizer: anything with transformers' ``apply_chat_template``.

    Returns:
        True when a ``[system, user]`` conversation renders with the system text in it.
    """
    probe = [{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # jinja's raise_exception, or any template that cannot take the roles
        return False
    return _PROBE in text


def fold_system(messages: Messages) -> Messages:
    """Move a leading system message into the first user turn, separated by a blank line.

    Nothing is dropped: ``[system S, user U, ...]`` becomes ``[user "S\\n\\nU", ...]``; a system
    message with no user turn after it becomes a user turn of its own.
    """
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}] + rest[1:]
    return [{"role": "user", "content": system}] + rest


def merge_same_role(messages: Messages) -> Messages:
    """Join consecutive turns of one role with a blank line, so user and assistant alternate."""
    merged: Messages = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            content = f"{merged[-1]['content']}\n\n{message['content']}"
            merged[-1] = {"role": message["role"], "content": content}
        else:
            merged.append(dict(message))
    return merged


def conform(messages: Messages, *, accepts_system: bool) -> Messages:
    """A conversation every common chat template renders: system folded in where it is refused,
    consecutive turns of one role merged."""
    return merge_same_role(messages if accepts_system else fold_system(messages))
