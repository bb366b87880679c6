"""What the Ray dashboard shows of a run: engine actors named per model and replica, with a repr, and
the ``moaa_engine_*`` / ``moaa_rows_*`` metrics on Ray's Prometheus endpoint.

The pool tests use the session's cluster; the metrics test starts a cluster of its own (the session's
has no dashboard and no metrics port) with ``ray start --head --block`` on free ports and its own
``--temp-dir``, and stops only that cluster, by ending its ``ray start`` process.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pools.pool_set import start_pool, stop_actors
from tests.support.simulated_runs import MOA, POISON, sim, write_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
HELLO = [[{"role": "user", "content": "hello"}]]


def sim_config(path: str = "sim/a", **settings) -> ModelConfig:
    """A simulated model (no weights, no CPU), two replicas unless told otherwise."""
    simulated = settings.pop("simulated", {})
    options = {"num_cpus": 0, "num_replicas": [2, 2], "retry_backoff_s": 0.05, **settings}
    return ModelConfig(path=path, engine="simulated", simulated=simulated, **options)


def describe(actor) -> tuple[str, str]:
    """Run inside an engine actor: its name and repr."""
    import ray

    return ray.get_runtime_context().get_actor_name(), repr(actor)


def described(pool) -> list[tuple[str, str]]:
    """Name and repr of every replica of ``pool``, asked through its actor handles."""
    import ray

    return sorted(ray.get([a.__ray_call__.remote(describe) for a in pool.actors]))


def test_engine_actors_are_named_after_model_and_replica_with_a_repr(ray_cluster):
    pool = start_pool("sim-a", sim_config())
    try:
        replicas = described(pool)
    finally:
        stop_actors(pool.actors)
    assert replicas == [
        ("sim-a/0", "EngineActor(sim-a/0, engine=simulated, path=sim/a)"),
        ("sim-a/1", "EngineActor(sim-a/1, engine=simulated, path=sim/a)"),
    ]


def test_a_model_pool_starts_beside_and_right_after_another_of_the_same_model(ray_cluster):
    first = start_pool("sim-a", sim_config())
    beside = start_pool("sim-a", sim_config())  # another run on the same cluster
    stop_actors(first.actors)
    again = start_pool("sim-a", sim_config())  # while Ray may still be killing the first's actors
    try:
        assert all(c.output for pool in (beside, again) for c in pool.chat(HELLO, SamplingParams()))
        names = [[name for name, _ in described(pool)] for pool in (beside, again)]
    finally:
        stop_actors(beside.actors + again.actors)
    assert names == [["sim-a/0", "sim-a/1"]] * 2


def test_a_restarted_replica_keeps_its_name(ray_cluster):
    pool = start_pool("sim-a", sim_config(num_replicas=[1, 1], simulated={"crash_after_calls": 1}))
    try:
        before = described(pool)
        assert all(c.output for c in pool.chat(HELLO, SamplingParams()))  # crashes, then restarts
        after = described(pool)
    finally:
        stop_actors(pool.actors)
    assert after == before and before[0][0] == "sim-a/0"


# --- metrics on a cluster of the test's own ---------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (kept bound until all are picked, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def wait_for(check, timeout_s: float, what: str):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(1)


@pytest.fixture
def own_cluster():
    """A Ray head with dashboard and metrics export on free loopback ports; yields the addresses."""
    gcs, dashboard, client, agent, agent_grpc, metrics = free_ports(6)
    temp_dir = tempfile.mkdtemp(prefix="moaa-ray-")  # short: Ray's socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--port={gcs}",
        f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--temp-dir={temp_dir}", "--num-cpus=4",
    ]  # fmt: skip
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dashboard_url = f"http://127.0.0.1:{dashboard}"
        wait_for(lambda: http_get(f"{dashboard_url}/api/version"), 120, "the dashboard")
        yield {
            "gcs": f"127.0.0.1:{gcs}",
            "dashboard": dashboard_url,
            "metrics": f"http://127.0.0.1:{metrics}/metrics",
            "env": env,
        }
    finally:
        head.terminate()  # `ray start --block` stops its own cluster's processes on SIGTERM
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def write_generate_config(tmp_path: Path, prompts: list[str]) -> Path:
    """A MoA generate stage on three simulated models; p1 fails (once) on the poisoned prompt."""
    slow = {"answer_tokens": 6, "latency_s": 0.1}
    models = {
        "p1": {**sim("p1", **slow, poison_marker=POISON), "max_attempts": 1},
        "p2": sim("p2", **slow),
        "agg": sim("agg", **slow),
    }
    return write_config(tmp_path, models, prompts, generate={**MOA, "batch_size": 4})


def moaa_series(text: str) -> dict[tuple[str, str], float]:
    """``moaa_*`` samples of a Prometheus text page, summed over workers: (name, model or stage)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_moaa_"):
                tag = sample.labels.get("model") or sample.labels.get("stage", "")
                totals[sample.name, tag] += sample.value
    return dict(totals)


@pytest.mark.slow
def test_engine_and_row_metrics_reach_the_prometheus_endpoint_per_model_and_stage(
    own_cluster, tmp_path
):
    prompts = [f"question {i}" for i in range(6)] + [f"tell me {POISON}"]
    config = write_generate_config(tmp_path, prompts)
    env = {**own_cluster["env"], "RAY_ADDRESS": own_cluster["gcs"]}
    command = [sys.executable, "-m", "moaa_ray.cli", "generate", "--config", str(config)]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]  # the poisoned row failed

    # p1 answers all but the poisoned prompt, which then gets no aggregation (a reference is missing).
    expected = {
        ("ray_moaa_engine_items_total", "p1"): 6,
        ("ray_moaa_engine_items_total", "p2"): 7,
        ("ray_moaa_engine_items_total", "agg"): 6,
        ("ray_moaa_rows_written_total", "generate"): 6,
        ("ray_moaa_rows_rejected_total", "generate"): 1,
    }

    def scraped():
        series = moaa_series(http_get(own_cluster["metrics"]))
        return series if all(series.get(k) == v for k, v in expected.items()) else None

    series = wait_for(scraped, 90, f"{expected} at {own_cluster['metrics']}")
    assert series["ray_moaa_engine_failures_total", "p1"] >= 1
    assert series.get(("ray_moaa_engine_failures_total", "p2"), 0) == 0
    for model in ("p1", "p2", "agg"):
        assert series["ray_moaa_engine_busy_seconds_total", model] > 0
        assert series["ray_moaa_engine_items_per_s", model] > 0

    from ray.util.state import list_actors

    actors = list_actors(address=own_cluster["dashboard"], detail=True)
    engines = {a.name: a.repr_name for a in actors if a.class_name == "EngineActor"}
    assert engines == {
        f"{m}/0": f"EngineActor({m}/0, engine=simulated, path={m})" for m in ("p1", "p2", "agg")
    }
