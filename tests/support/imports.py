"""Reading a Python file's imports with ``ast``, for the tests that check import rules."""

from __future__ import annotations

import ast


def import_names(node: ast.AST, package: str) -> list[str]:
    """The modules an import node names, relative ones made absolute against ``package`` (the
    dotted package the file sits in): for ``from X import Y`` both ``X`` and ``X.Y`` (``Y`` may be
    a module); nothing for a node that is no import."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = package.rsplit(".", node.level - 1)[0] if node.level else ""
        module = ".".join(part for part in (base, node.module or "") if part)
        return [module] + [f"{module}.{alias.name}" for alias in node.names]
    return []
