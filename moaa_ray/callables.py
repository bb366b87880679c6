"""Python callables named in a config as ``package.module:function``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
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


def source_digest(spec: str) -> str:
    """A digest of the source file of the module that defines ``package.module:function``.

    An edit of that module (the function, or anything else in its file) gives another digest, so
    a result of the function is not reused after its code changed. Code it imports from other
    modules is not covered. A module without a source file digests as the spec's name.
    """
    module_name = check_callable_spec(spec).partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    origin = Path(found.origin) if found is not None and found.origin else None
    if origin is None or not origin.is_file():
        return f"name:{spec}"
    return hashlib.sha256(origin.read_bytes()).hexdigest()
