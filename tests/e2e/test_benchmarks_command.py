"""benchmarks/README.md's one-benchmark command, verbatim: it writes the figures, the plot and a log.

The whole suite (``--quick``, up to 10 minutes) is not run here; its runner is the same code.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def readme_command(pattern: str) -> str:
    text = (REPO / "benchmarks" / "README.md").read_text()
    line = next(line for line in text.splitlines() if re.search(pattern, line))
    return line.split("#")[0].strip()


def test_the_main_readme_runs_the_same_suite_command_as_the_benchmarks_readme():
    command = readme_command(r"run\.py --quick\s+#")
    assert f"\n{command}\n" in (REPO / "README.md").read_text()


def test_one_benchmark_runs_as_written_and_writes_its_json_png_and_log(tmp_path):
    command = readme_command(r"--only pool_vs_serve")
    shutil.copytree(
        REPO / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("results")
    )
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = tmp_path / "benchmarks" / "results"
    figures = json.loads((results / "pool_vs_serve.json").read_text())
    assert figures["quick"] is True and figures["pool_burst_calls_per_s"] > 0
    assert (results / "pool_vs_serve.png").read_bytes().startswith(b"\x89PNG")
    assert (results / "pool_vs_serve.log").stat().st_size > 0
