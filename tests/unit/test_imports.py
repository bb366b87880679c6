"""What the package imports: no heavy library where none is needed, and a module graph without circles
whose imports point down its layers."""

import ast
import subprocess
import sys
from pathlib import Path

from moaa_ray.stages.layout import STAGES
from tests.support.imports import import_names

HEAVY = ["ray", "torch", "transformers", "vllm", "deepspeed"]
PACKAGE = Path(__file__).resolve().parents[2] / "moaa_ray"
# Calls that import the module a string literal names (``package.module`` or ``module:function``).
LOADERS = {"import_module", "load_callable"}


def test_core_imports_no_heavy_library():
    code = (
        "import sys, moaa_ray.core, moaa_ray.core.moa, moaa_ray.core.judging, moaa_ray.core.ranking, "
        "moaa_ray.core.criteria, moaa_ray.core.winrates, moaa_ray.config, moaa_ray.records\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_loads_no_heavy_library():
    code = (
        "import sys\nfrom moaa_ray.cli import build_parser\nbuild_parser().format_help()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validating_the_paper_config_starts_no_ray_and_loads_no_heavy_library():
    code = (
        "import sys\nfrom moaa_ray.cli import main\n"
        "code = main(['validate', '--config', 'configs/paper-llama31-8b.yaml', '--cluster', "
        "'cluster.yaml'])\n"
        f"print(code, [m for m in {HEAVY!r} if m in sys.modules])"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.splitlines()[-1] == "0 []"


def _module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The package module that importing ``name`` runs last: ``name`` itself, else the longest
    module it starts with (``package.module.attribute`` imports ``package.module``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file, inside functions too:
    ``import``, ``from`` (relative ones resolved; ``from X import Y`` imports ``X.Y`` when that is a
    module), string literals passed to ``import_module`` or ``load_callable``, and the stage
    table's entry points wherever a stage's ``entry_point`` is read (that module loads them)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        names += import_names(node, package)
        if isinstance(node, ast.Call) and node.args:
            called = node.func.attr if isinstance(node.func, ast.Attribute) else None
            called = node.func.id if isinstance(node.func, ast.Name) else called
            literal = node.args[0]
            if called in LOADERS and isinstance(literal, ast.Constant):
                names.append(str(literal.value).partition(":")[0])
        elif isinstance(node, ast.Attribute) and node.attr == "entry_point":
            names += [stage.entry_point.partition(":")[0] for stage in STAGES]
    found = {_target(name, modules) for name in names}
    return {target for target in found if target is not None and target != module}


def import_graph() -> dict[str, set[str]]:
    """Each package module and the package modules it imports."""
    modules = _module_names()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's algorithm,
    iterative): each is a set of modules that import one another, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import cycle through a component's first module, as ``a -> b -> ... -> a``."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return component


def test_circles_finds_each_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert _a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions_relative_ones_and_loaded_strings():
    graph = import_graph()
    assert "moaa_ray.orchestrator" in graph["moaa_ray.cli"]  # inside a function
    entry_points = {stage.entry_point.partition(":")[0] for stage in STAGES}
    assert entry_points <= graph["moaa_ray.cli"]  # loaded by string
    assert "moaa_ray.callables" in graph["moaa_ray.engines.function"]


def test_the_package_imports_no_module_that_imports_it_back():
    """No import circle, counting imports inside functions and modules loaded by name."""
    graph = import_graph()
    found = [" -> ".join(_a_cycle(graph, component)) for component in circles(graph)]
    assert found == []


def test_imports_point_downward_between_packages():
    """No module imports one of a layer above it, inside functions or by name: ``pipeline`` and
    ``train`` never import each other; run-directory, pool, engine and pure code sit below both;
    the config (a module or a package) sits below everything that runs."""
    running = ("moaa_ray.pipeline", "moaa_ray.train", "moaa_ray.orchestrator", "moaa_ray.cli")
    forbidden = {
        "moaa_ray.pipeline": ("moaa_ray.train", "moaa_ray.orchestrator", "moaa_ray.cli"),
        "moaa_ray.train": ("moaa_ray.pipeline", "moaa_ray.orchestrator", "moaa_ray.cli"),
        "moaa_ray.stages": (*running, "moaa_ray.serve"),
        "moaa_ray.pools": (*running, "moaa_ray.stages", "moaa_ray.serve"),
        "moaa_ray.serve": (*running, "moaa_ray.stages", "moaa_ray.pools"),
        "moaa_ray.engines": (*running, "moaa_ray.stages", "moaa_ray.pools", "moaa_ray.serve"),
        "moaa_ray.core": (
            *running, "moaa_ray.stages", "moaa_ray.pools", "moaa_ray.serve", "moaa_ray.engines",
        ),
        "moaa_ray.config": (
            *running, "moaa_ray.stages", "moaa_ray.engines", "moaa_ray.pools", "moaa_ray.serve",
        ),
    }  # fmt: skip

    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        for layer, banned in forbidden.items()
        if within(module, layer)
        for target in sorted(targets)
        if any(within(target, prefix) for prefix in banned)
    ]
    assert wrong == []


def test_no_public_name_is_defined_twice_in_the_package():
    """One meaning per public function or class name across every module."""
    import ast
    from collections import defaultdict
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "moaa_ray"
    defined = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            if isinstance(node, kinds) and not node.name.startswith("_"):
                defined[node.name].append(str(path.relative_to(package)))
    assert {name: paths for name, paths in defined.items() if len(paths) > 1} == {}
