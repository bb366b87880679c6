"""What the end-to-end benchmarks share: ``moaa`` commands run as a user runs them, and their runs.

Each command runs in a subprocess and starts its own local Ray cluster, so a benchmark measures the
pipeline exactly as ``moaa run`` / ``moaa evaluate`` do it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def moaa(command: str, config: Path, run_dir: Path, *args: str) -> float:
    """Run a ``moaa`` subcommand on ``config``; returns its seconds (raises if it failed)."""
    started = time.monotonic()
    argv = [sys.executable, "-m", "moaa_ray.cli", command, "--config", str(config)]
    subprocess.run([*argv, "--run-dir", str(run_dir), *args], cwd=ROOT, check=True)
    return round(time.monotonic() - started, 1)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def accuracies(run_dir: Path, benchmark: str) -> dict[str, float]:
    """Held-out accuracy (%) on ``benchmark`` per model of a run: base, sft, round-1/dpo, ..."""
    return {
        model["stage"]: round(100 * model["accuracy"][benchmark], 1)
        for model in manifest(run_dir)["models"]
        if isinstance(model["accuracy"], dict)
    }


def keep_until_round_one_judged(source: Path, target: Path) -> None:
    """Copy a run up to round 1's preferences, so a variant retrains from the same pairs."""
    target.mkdir(parents=True)
    for name in ("base", "generate", "sft", "round-0", "manifest.json"):
        if not (source / name).exists():
            continue
        copy = shutil.copytree if (source / name).is_dir() else shutil.copy2
        copy(source / name, target / name)
    (target / "round-1").mkdir()
    shutil.copytree(source / "round-1" / "preferences", target / "round-1" / "preferences")
    shutil.copy2(source / "round-1" / "manifest.json", target / "round-1" / "manifest.json")
