"""The stages share code only through shared modules, and only by public names."""

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[3] / "moaa_ray" / "pipeline"
STAGES = {
    "generate": ("moaa_ray.pipeline.generate", "moaa_ray.pipeline.moa_graph"),
    "preferences": ("moaa_ray.pipeline.preferences", "moaa_ray.pipeline.preference_graph"),
    "evaluate": ("moaa_ray.pipeline.evaluate",),
}


def _stage(module: str) -> str | None:
    for stage, prefixes in STAGES.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return stage
    return None


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every (module, names) a file imports, inside functions too; names are empty for ``import``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(PIPELINE.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_stage_imports_another_stage():
    wrong = []
    for path in PIPELINE.rglob("*.py"):
        own = _stage(_module(path))
        for module, names in _imports(path):
            targets = [module] + [f"{module}.{name}" for name in names]
            other = {_stage(t) for t in targets} - {None, own}
            wrong += [f"{_module(path)} imports {module} ({', '.join(other)})"] if other else []
    assert wrong == []


def test_no_pipeline_module_imports_a_private_name():
    wrong = [
        f"{_module(path)}: from {module} import {name}"
        for path in PIPELINE.rglob("*.py")
        for module, names in _imports(path)
        if module.startswith("moaa_ray.")
        for name in names
        if name.startswith("_")
    ]
    assert wrong == []
