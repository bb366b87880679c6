"""The README's long runs, each run once per session as a user runs it, shared by the tests that
read them."""

from __future__ import annotations

import pytest

from tests.support.readme_runs import ReadmeRun, fresh_directory, readme_line, run_as_user


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> ReadmeRun:
    """The README's first command, the demo, run once per session (its console test and the
    notebooks read the same run: ``runs/demo`` in its directory)."""
    directory = fresh_directory(tmp_path_factory, "demo", ["scripts", "configs", "moaa_ray/data"])
    return run_as_user("bash scripts/demo.sh", directory)


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> ReadmeRun:
    """The README's toy-task command, run once per session (its test and the notebooks read it)."""
    folders = ["configs", "moaa_ray/data/toy_addition"]
    directory = fresh_directory(tmp_path_factory, "toy", folders)
    return run_as_user(readme_line(r"moaa run .*toy-addition"), directory)
