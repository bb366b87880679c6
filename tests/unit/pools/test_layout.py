"""engines/ holds backends and what they share, and pools/ the Ray scheduler above them: the
factory imports the backends, never the other way round; no engines module reaches into another's
private names or into the pools; the pools import no stage, and their dispatch needs no Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "moaa_ray"
ABOVE_POOLS = (
    "moaa_ray.pipeline",
    "moaa_ray.train",
    "moaa_ray.stages",
    "moaa_ray.orchestrator",
    "moaa_ray.cli",
)


def imports_of(folder: str) -> list[tuple[str, str, list[str]]]:
    """``(file, module, names)`` for every import of a folder's modules, in functions too."""
    found = []
    for path in sorted((PACKAGE / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found.append((path.name, node.module or "", [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(path.name, alias.name, []) for alias in node.names]
    return found


def test_no_backend_imports_the_factory():
    wrong = [
        name
        for name, module, _ in imports_of("engines")
        if name != "factory.py" and module == "moaa_ray.engines.factory"
    ]
    assert wrong == []


def test_no_engines_module_imports_a_private_name_or_the_pools():
    wrong = [
        f"{name}: {module}"
        for name, module, names in imports_of("engines")
        if module.startswith("moaa_ray.pools") or any(n.startswith("_") for n in names)
    ]
    assert wrong == []


def test_the_pools_import_no_stage_nor_what_runs_the_stages():
    wrong = [
        f"{name}: {module}"
        for name, module, _ in imports_of("pools")
        if module.startswith(ABOVE_POOLS)
    ]
    assert wrong == []


def test_the_dispatch_imports_no_ray():
    code = "import sys, moaa_ray.pools.dispatch\nprint('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
