"""The tests' own layout: test modules sit in a tier's folder, share code (fakes included) only
through ``tests/support``, and every end-to-end test is marked so."""

import ast
from pathlib import Path

from tests.support.imports import import_names

TESTS = Path(__file__).resolve().parents[1]


def _test_modules() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _imported(path: Path) -> list[str]:
    """Every module a file imports, inside functions too, relative imports made absolute; for
    ``from X import Y`` both ``X`` and ``X.Y`` (``Y`` may be a module)."""
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    tree = ast.parse(path.read_text())
    return [name for node in ast.walk(tree) for name in import_names(node, package)]


def test_no_test_module_sits_at_the_root_of_tests():
    assert [p.name for p in TESTS.glob("test_*.py")] == []


def test_no_test_module_imports_another_test_module_or_a_conftest():
    wrong = [
        f"{path.relative_to(TESTS)}: {name}"
        for path in _test_modules()
        for name in _imported(path)
        if name.rsplit(".", 1)[-1].startswith("test_") or name.rsplit(".", 1)[-1] == "conftest"
    ]
    assert wrong == []


def test_tests_share_code_only_through_tests_support():
    shared = [
        f"{path.relative_to(TESTS)}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in _imported(path)
        if name.startswith("tests.") and not name.startswith("tests.support")
    ]
    assert shared == []


def _marks(path: Path) -> set[str]:
    """The names of the ``pytest.mark.<name>`` in a module's ``pytestmark``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return {
                mark.attr
                for mark in ast.walk(node.value)
                if isinstance(mark, ast.Attribute)
                and isinstance(mark.value, ast.Attribute)
                and mark.value.attr == "mark"
            }
    return set()


def test_every_end_to_end_test_is_marked_e2e():
    modules = sorted((TESTS / "e2e").glob("test_*.py"))
    assert modules
    assert [p.name for p in modules if "e2e" not in _marks(p)] == []


def test_fakes_have_one_home():
    """Every ``Fake*`` class is defined in ``tests/support/fakes.py``."""
    elsewhere = [
        f"{path.relative_to(TESTS)}: {node.name}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != TESTS / "support" / "fakes.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.startswith("Fake")
    ]
    assert elsewhere == []
