"""Dynamic criteria filtering: pick the few criteria each prompt is judged on.

MoAA (arXiv 2505.03059) first asks a model for the criteria from a fixed list that matter most for a
prompt (``num_criteria``, 3 by default), then has the judges compare answers on those criteria only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moaa_ray.core.templates import render_template

logger = logging.getLogger(__name__)

DEFAULT_CRITERIA_FILE = "criteria.txt"
SELECT_CRITERIA_TEMPLATE = "select_criteria.txt"

_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]*")
_ITEM_SEPARATOR = re.compile(r"[\n,;]")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\(?\d+[.)])\s*")
# What follows a criterion name on its line: "accuracy: ...", "accuracy - ...", "accuracy (...)".
_DESCRIPTION_SEPARATOR = re.compile(r":|\s[-–—]\s|\(")


@dataclass(frozen=True)
class Criterion:
    """One judging criterion: a short name and the one-line description judges read."""

    name: str
    description: str


def load_criteria(path: str | Path | None = None) -> list[Criterion]:
    """Read a criteria file: one ``name: description`` per line, ``#`` comments and blank lines ignored.

    Args:
        path: a user's criteria file, or None for the packaged ``moaa_ray/prompts/criteria.txt``.

    Returns:
        The criteria in file order.

    Raises:
        ValueError: naming the file (and line) when it cannot be read, a line is malformed, a name
            repeats or the file holds no criteria.
    """
    if path is None:
        source = f"moaa_ray/prompts/{DEFAULT_CRITERIA_FILE}"
        prompts = resources.files("moaa_ray.prompts")
        text = prompts.joinpath(DEFAULT_CRITERIA_FILE).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"criteria file {source}: cannot read it ({exc})") from None
    criteria: list[Criterion] = []
    seen_names: set[str] = set()
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, description = (part.strip() for part in line.partition(":"))
        where = f"{source}, line {line_number}"
        if not _VALID_NAME.fullmatch(name) or not description:
            raise ValueError(
                f"{where}: expected 'name: description' with a name of letters, digits, spaces, "
                f"'-' or '_', got {raw_line!r}"
            )
        if _normalize(name) in seen_names:
            raise ValueError(f"{where}: criterion {name!r} is listed twice")
        seen_names.add(_normalize(name))
        criteria.append(Criterion(name=name, description=description))
    if not criteria:
        raise ValueError(f"{source}: no criteria found; expected lines of 'name: description'")
    return criteria


def format_conversation(messages: Sequence[Mapping[str, str]]) -> str:
    """Render chat messages as labelled text blocks for a judging prompt.

    Args:
        messages: ``{"role": "system"|"user"|"assistant", "content": str}`` dicts, oldest first.

    Returns:
        One ``[User]``/``[Assistant]``/``[System]`` block per message, separated by blank lines.

    Raises:
        ValueError: on an empty conversation or a message with an unknown role or non-string content.
    """
    if not messages:
        raise ValueError("a conversation needs at least one message")
    blocks = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in _ROLE_LABELS or not isinstance(content, str):
            raise ValueError(
                f"message {index}: expected a dict with role in {sorted(_ROLE_LABELS)} and string "
                f"content, got role={role!r} and content of type {type(content).__name__}"
            )
        blocks.append(f"[{_ROLE_LABELS[role]}]\n{content.strip()}")
    return "\n\n".join(blocks)


def format_criteria(criteria: Sequence[Criterion | str]) -> str:
    """Render criteria as a bulleted list, with descriptions where given.

    Args:
        criteria: criteria, or bare criterion names (e.g. the output of ``select_criteria_or_default``).

    Returns:
        One ``- name: description`` (or ``- name``) line per criterion.
    """
    if not criteria:
        raise ValueError("at least one criterion is needed")
    lines = []
    for criterion in criteria:
        if isinstance(criterion, Criterion):
            lines.append(f"- {criterion.name}: {criterion.description}")
        else:
            lines.append(f"- {criterion}")
    return "\n".join(lines)


def render_criteria_prompt(
    messages: Sequence[Mapping[str, str]],
    criteria: Sequence[Criterion],
    k: int,
    template: str = SELECT_CRITERIA_TEMPLATE,
) -> list[dict[str, str]]:
    """Build the chat request that asks a model for the ``k`` criteria most relevant to a prompt.

    Args:
        messages: the conversation being answered (its last message is the user's request).
        criteria: the full criteria list to choose from.
        k: how many criteria to ask for (3 in the paper).
        template: a packaged template name or a path to a user's template with ``$conversation``,
            ``$criteria`` and ``$k``.

    Returns:
        A single user message for the selection model.
    """
    _check_k(k)
    content = render_template(
        template,
        conversation=format_conversation(messages),
        criteria=format_criteria(criteria),
        k=k,
    )
    return [{"role": "user", "content": content}]


def parse_criteria_selection(text: str, criteria: Sequence[Criterion], k: int) -> list[str] | None:
    """Read the criterion names out of a selection model's reply.

    Tolerates numbered lists, bullets, comma-separated names, markdown bold, any letter case, ``-``/``_``
    in place of spaces, and a description after each name.

    Args:
        text: the selection model's reply.
        criteria: the criteria list the model chose from; other names are ignored.
        k: the most names to return.

    Returns:
        Up to ``k`` known names as spelled in ``criteria``, in order of first appearance without
        repeats, or None when the reply names no known criterion.
    """
    _check_k(k)
    if not criteria:
        raise ValueError("criteria must not be empty")
    names_by_key = {_normalize(criterion.name): criterion.name for criterion in criteria}
    alternatives = "|".join(re.escape(key) for key in sorted(names_by_key, key=len, reverse=True))
    name_pattern = re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")
    selected: list[str] = []
    for item in _ITEM_SEPARATOR.split(text):
        for key in _criterion_keys_in_item(item, name_pattern):
            if names_by_key[key] not in selected:
                selected.append(names_by_key[key])
    if not selected:
        logger.debug("no known criterion in selection reply %r", text[:200])
        return None
    return selected[:k]


def select_criteria_or_default(
    text: str | None, criteria: Sequence[Criterion], k: int, default: Sequence[str]
) -> tuple[list[str], bool]:
    """Parse a selection reply, falling back to default criteria when it names none.

    Args:
        text: the selection model's reply, or None when the call failed.
        criteria: the criteria list the model chose from.
        k: the most names to return.
        default: criterion names to use when the reply is unusable; each must be in ``criteria``.

    Returns:
        ``(names, fell_back)``: the criteria to judge on, and whether the default was used (to count).

    Raises:
        ValueError: when ``default`` names a criterion that is not in ``criteria``.
    """
    known_names = {criterion.name for criterion in criteria}
    unknown = [name for name in default if name not in known_names]
    if unknown or not default:
        raise ValueError(
            f"default criteria must be a non-empty subset of {sorted(known_names)}, got {list(default)}"
        )
    selected = None if text is None else parse_criteria_selection(text, criteria, k)
    if selected is None:
        return list(default)[:k], True
    return selected, False


def _criterion_keys_in_item(item: str, name_pattern: re.Pattern[str]) -> list[str]:
    """Normalized criterion names in one list item, preferring the part before any description."""
    without_bullet = _BULLET.sub("", item, count=1)
    for part in _DESCRIPTION_SEPARATOR.split(without_bullet, maxsplit=1):
        keys = name_pattern.findall(_normalize(part))
        if keys:
            return keys
    return []


def _normalize(text: str) -> str:
    """Lower-case, drop markdown emphasis and treat runs of spaces, ``-`` and ``_`` as one space."""
    without_markup = re.sub(r"[*`]", "", text)
    return re.sub(r"[\s_-]+", " ", without_markup).strip().lower()


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
