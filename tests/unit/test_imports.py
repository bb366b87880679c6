import subprocess
import sys
from pathlib import Path

HEAVY = ["ray", "torch", "transformers", "vllm", "deepspeed"]


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


def test_imports_point_downward_between_packages():
    """``pipeline`` and ``train`` never import each other; run-dir and pool code sit below both, and
    the config below every package that runs it."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "moaa_ray"
    forbidden = {
        "pipeline": ("moaa_ray.train", "moaa_ray.orchestrator", "moaa_ray.cli"),
        "train": ("moaa_ray.pipeline", "moaa_ray.orchestrator", "moaa_ray.cli"),
        "runs": ("moaa_ray.pipeline", "moaa_ray.train", "moaa_ray.orchestrator"),
        "engines": (
            "moaa_ray.pipeline",
            "moaa_ray.train",
            "moaa_ray.runs",
            "moaa_ray.orchestrator",
        ),
        "core": ("moaa_ray.pipeline", "moaa_ray.train", "moaa_ray.runs", "moaa_ray.engines"),
        "config": (
            "moaa_ray.pipeline",
            "moaa_ray.train",
            "moaa_ray.runs",
            "moaa_ray.engines",
            "moaa_ray.pools",
            "moaa_ray.serve",
            "moaa_ray.orchestrator",
            "moaa_ray.cli",
        ),
    }
    wrong = []
    for folder, banned in forbidden.items():
        for path in (package / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                wrong += [f"{path.name}: {n}" for n in names if n.startswith(banned)]
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
