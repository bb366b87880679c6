"""Faults on a multi-node cluster (head + worker nodes on 127.0.0.1) and a killed driver.

Each scenario runs in its own process with its own Ray cluster
(``tests/support/multinode_scenario.py``), so the session's shared cluster is untouched.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]


def run_scenario(kind: str, workdir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.multinode_scenario", kind, str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith('{"summary"')]
    return json.loads(line)


def test_losing_a_node_with_a_replica_mid_stage_loses_and_duplicates_nothing(tmp_path):
    result = run_scenario("remove", tmp_path)
    assert result["summary"] == {"status": "done", "rows_written": 60, "rows_failed": 0}
    assert len(result["row_ids"]) == len(set(result["row_ids"])) == 60
    assert result["lost_references"] == 0


def test_a_node_added_mid_stage_gets_the_pending_replica_and_its_share_of_work(tmp_path):
    result = run_scenario("add", tmp_path)
    assert result["summary"]["status"] == "done"
    assert len(result["row_ids"]) == len(set(result["row_ids"])) == 60
    # p2 and agg: one replica each; p1: the first replica and the one placed on the new node.
    assert len(result["calls_per_replica"]) == 4, result["calls_per_replica"]
    assert min(result["calls_per_replica"]) > 0


def test_a_driver_killed_mid_stage_resumes_with_every_row_once(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(40)))
    sim = {"engine": "simulated", "num_cpus": 0, "max_batch_size": 2,
           "simulated": {"latency_s": 0.3, "answer_tokens": 6}}  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "ray": {"num_cpus": 2},
                "models": {"p": {"path": "p", **sim}, "a": {"path": "a", **sim}},
                "generate": {
                    "inputs": [{"path": str(prompts)}],
                    "proposers": ["p", "p"],
                    "aggregator": "a",
                    "sampling": {"max_new_tokens": 6},
                    "batch_size": 2,
                },
            }
        )
    )
    command = [sys.executable, "-m", "moaa_ray.cli", "generate", "--config", str(config)]
    stage = tmp_path / "run" / "generate"
    driver = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(stage.glob("part-*.parquet")):
        assert driver.poll() is None and time.monotonic() < deadline, "no shard before the kill"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local cluster it started
    driver.wait()
    (stage / ".part-leftover.parquet.tmp").write_text("a shard the killed driver was writing")
    assert (tmp_path / "run" / ".moaa.lock").exists()  # stale: its process is gone

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    import pyarrow.parquet as pq

    ids = [
        r
        for s in sorted(stage.glob("part-*.parquet"))
        for r in pq.read_table(s)["row_id"].to_pylist()
    ]
    assert len(ids) == len(set(ids)) == 40
    assert not list(stage.rglob("*.tmp")) and not (tmp_path / "run" / ".moaa.lock").exists()
