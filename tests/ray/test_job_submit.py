"""The README's `ray job submit --working-dir .` flow against a `ray start --head` on 127.0.0.1."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(480)]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head_node():
    """`ray start --head --block`, stopped by terminating it (so other local clusters are untouched)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited
    gcs, dashboard = free_port(), free_port()
    start = [
        str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dashboard}",
        "--num-cpus=8", f"--temp-dir={temp_dir}",
        # The session's other local cluster holds the default agent ports: pick free ones.
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip
    head = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, head)
        yield env, address
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_dashboard(address: str, head: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no Ray dashboard at {address} after {timeout_s}s")


def test_generate_job_runs_under_ray_job_submit(head_node, tmp_path):
    env, address = head_node
    run_dir = tmp_path / "run"
    submit = [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
        "--working-dir", ".", "--", "python", "jobs/generate_sft.py",
        "--config", "configs/demo.yaml", "--run-dir", str(run_dir),
        "generate.inputs.0.limit=3", "generate.inputs.1.limit=0", "generate.sampling.max_new_tokens=4",
    ]  # fmt: skip
    deadline = time.monotonic() + 150  # the head's job agent comes up a while after the dashboard
    while True:
        out = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        if "No available agent" not in out.stdout + out.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["sft_data"]["status"] == "done"
    assert manifest["stages"]["sft_data"]["rows_total"] == 3
