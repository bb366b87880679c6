"""The README's first command, verbatim: the demo's console is short and ends with the stage table."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def test_demo_console_is_at_most_60_lines_and_holds_the_table(tmp_path):
    # What the demo reads, in a fresh directory; the installed environment is linked in.
    for folder in ("scripts", "configs", "moaa_ray/data"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # as a user has it
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1100,
    )
    console = done.stdout
    assert done.returncode == 0, console
    lines = console.splitlines()
    assert len(lines) <= MAX_LINES, console
    table = (tmp_path / "runs" / "demo" / "summary.txt").read_text()
    assert table.strip() in console
    for stage in ("generate", "sft", "round-1/preferences", "round-1/dpo", "evaluate"):
        assert any(line.startswith(stage + " ") for line in table.splitlines()), table
    assert lines[0].startswith("moaa run · run directory") and "dashboard" in lines[1]
    assert (tmp_path / "runs" / "demo" / "logs" / "moaa.log").stat().st_size > 0
