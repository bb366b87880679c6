"""The declared dependencies are exactly what the package imports."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def _imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (REPO / "moaa_ray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"moaa_ray"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_declared_dependencies_are_exactly_the_imported_ones():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {"vllm": "gpu", "tiktoken": "arena-hard"}  # imported only where installed
    for module, extra in extras.items():
        assert {_name(r) for r in project["optional-dependencies"][extra]} == {module}
    distributions = packages_distributions()
    imported = set()
    for module in _imported_top_level_modules() - set(extras):
        imported |= {_name(d) for d in distributions[module]}
    # torch.utils.tensorboard writes the training curves, and needs the tensorboard package.
    assert declared == imported | {"tensorboard"}


def test_the_license_is_an_spdx_expression_with_its_file():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / project["license-files"][0]).read_text()


def test_the_cluster_launcher_config_is_valid_and_syncs_the_source_only():
    import json

    import jsonschema
    import ray.autoscaler
    import yaml

    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema.read_text()))
    assert cluster["rsync_filter"] == [".gitignore"]
    gitignore = (REPO / ".gitignore").read_text().split()
    assert ".venv*/" in gitignore and "/runs/" in gitignore
    assert {"**/.venv*", "**/runs/**", "**/.git/**"} <= set(cluster["rsync_exclude"])
