"""Prompt templates shipped as text files in ``moaa_ray/prompts/``."""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from importlib import resources
from pathlib import Path


@functools.cache
def load_template(name_or_path: str) -> str:
    """Return a template's text.

    Args:
        name_or_path: a file name under ``moaa_ray/prompts/`` (e.g. ``"aggregate.txt"``) or a path to a
            user's own template file.

    Returns:
        The template text, with ``$placeholders`` (``string.Template`` syntax).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return resources.files("moaa_ray.prompts").joinpath(name_or_path).read_text(encoding="utf-8")


def render_template(name_or_path: str, **values: object) -> str:
    """Fill a template's ``$placeholders``; a missing value raises ``KeyError`` naming it."""
    return string.Template(load_template(name_or_path)).substitute(**values)


def split_numbered(text: str, label: Callable[[int], str], separator: str) -> list[str]:
    """Invert ``separator.join(label(n) + item for n, item in enumerate(items, start=1))``.

    An item is cut only where ``separator + label(n)`` for the next number ``n`` starts, so labels
    of other numbers inside an item stay in it; an item that itself contains the next number's
    label is cut there (the rendered text cannot tell the two apart).

    Args:
        text: the rendered items.
        label: the label of item ``n`` (e.g. ``lambda n: f"{n}. "``).
        separator: what joins the items (e.g. ``"\\n"``).

    Returns:
        The items, in order; empty when ``text`` does not start with the first label.
    """
    if not text.startswith(label(1)):
        return []
    items, start, number = [], len(label(1)), 2
    while (end := text.find(separator + label(number), start)) >= 0:
        items.append(text[start:end])
        start, number = end + len(separator + label(number)), number + 1
    items.append(text[start:])
    return items
