"""README commands run as a user runs them: in a fresh directory holding only what they read, with
the installed environment linked in and no ``RAY_*`` settings of the test session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUN_DIR = "runs/demo"  # configs/demo.yaml's run_dir


@dataclass(frozen=True)
class ReadmeRun:
    """A README command run as a user runs it, in a fresh directory holding only what it reads."""

    directory: Path  # the command's working directory
    command: str
    returncode: int
    console: str  # stdout and stderr, interleaved
    summary: str | None  # the run's summary.txt as the command left it (a later resume rewrites it)

    @property
    def run_dir(self) -> Path:
        """Where the run writes: the command's ``--run-dir``, else ``configs/demo.yaml``'s."""
        given = re.search(r"--run-dir (\S+)", self.command)
        return self.directory / (given.group(1) if given else DEFAULT_RUN_DIR)

    def check(self) -> str:
        """The console of a command that succeeded."""
        assert self.returncode == 0, f"{self.command}\n{self.console[-6000:]}"
        return self.console


def run_as_user(command: str, directory: Path, timeout: int = 1200) -> ReadmeRun:
    """``command`` in ``directory`` (where ``.venv`` links to the installed environment), with the
    environment a user has: no ``RAY_*`` settings of this test session."""
    venv = directory / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        command,
        shell=True,
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    given = re.search(r"--run-dir (\S+)", command)
    summary = directory / (given.group(1) if given else DEFAULT_RUN_DIR) / "summary.txt"
    text = summary.read_text() if summary.is_file() else None
    return ReadmeRun(directory, command, done.returncode, done.stdout, text)


def readme_line(pattern: str) -> str:
    """The README's first line matching ``pattern``: a command to run verbatim."""
    text = (REPO / "README.md").read_text()
    return next(line for line in text.splitlines() if re.search(pattern, line))


def fresh_directory(tmp_path_factory, name: str, folders: list[str]) -> Path:
    """A new directory holding copies of the repository's ``folders``."""
    directory = tmp_path_factory.mktemp(name)
    for folder in folders:
        shutil.copytree(REPO / folder, directory / folder)
    return directory
