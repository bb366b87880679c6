"""Prompt templates shipped as text files in ``moaa_ray/prompts/``."""

from __future__ import annotations

import functools
import string
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
