"""The README's cluster flow, run verbatim: `ray start --head`, `ray job submit`, `ray stop`.

It runs in a copy of the checkout with token auth on, as a new user would, and in its own pytest
process (``-m stops_ray``; scripts/test.sh), since `ray start` takes Ray's default ports and
`ray stop` stops every local cluster.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.stops_ray,
    pytest.mark.timeout(600),
]

REPO = Path(__file__).resolve().parents[2]
MARKER = "run verbatim by `tests/e2e/test_readme_cluster.py`"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index(MARKER) :]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1)


def test_readme_cluster_flow_runs_as_written(tmp_path):
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout
    for name in files.split():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    (checkout / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            ["bash", "-ec", readme_block()],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=env,
                       capture_output=True, timeout=120)  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "succeeded" in log, log[-6000:]
    manifest = json.loads((checkout / "runs" / "job" / "manifest.json").read_text())
    stage = manifest["stages"]["generate"]
    assert stage["status"] == "done" and stage["rows_written"] == stage["rows_total"] > 0
