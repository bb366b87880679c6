"""engines/ holds backends and what they share: the factory imports the backends, never the other
way round, and no engines module reaches into another's private names or into the pools."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINES = Path(__file__).resolve().parents[3] / "moaa_ray" / "engines"


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``from module import names`` and ``import module`` in a file, in functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def test_no_backend_imports_the_factory():
    wrong = [
        path.name
        for path in ENGINES.glob("*.py")
        if path.name != "factory.py"
        for module, _ in imports_of(path)
        if module == "moaa_ray.engines.factory"
    ]
    assert wrong == []


def test_no_engines_module_imports_a_private_name_or_the_pools():
    wrong = [
        f"{path.name}: {module}"
        for path in ENGINES.glob("*.py")
        for module, names in imports_of(path)
        if module.startswith("moaa_ray.pools") or any(n.startswith("_") for n in names)
    ]
    assert wrong == []
