"""Python callables named in a config as ``package.module:function``."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_callable_spec(spec: str) -> str:
    """``spec`` unchanged if it reads ``module:function``; else ValueError saying what is expected."""
    if not _SPEC.match(spec):
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    return spec


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function``.

    Raises:
        ValueError: naming the spec, when the module or function is missing or not callable.
    """
    module_name, _, name = check_callable_spec(spec).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{spec!r}: cannot import {module_name!r}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{spec!r}: {module_name!r} has no callable {name!r}")
    return function
