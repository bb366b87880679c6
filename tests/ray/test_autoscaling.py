"""A stage on an autoscaling cluster: Ray's autoscaler adds the nodes a pool's replicas ask for, and
removes them once the stage has stopped its pools.

``ray.cluster_utils.AutoscalingCluster`` with the ``fake_multinode`` provider runs the autoscaler
on this machine, each launched node a raylet of its own: a CPU head, and one worker type offering
the custom resource ``slot`` that model ``p1`` asks for, so none of its replicas fits the head.

Starting it runs ``ray stop --force``, which stops every Ray process on the machine, so this module
runs alone, in a pytest process of its own (``-m stops_ray``; scripts/test.sh).
"""

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.support.multinode_scenario import wait_for_rows, write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.stops_ray, pytest.mark.timeout(600)]

WORKER_TYPE = "slot-node"
NUM_PROMPTS = 120
IDLE_TIMEOUT_MINUTES = 0.1  # 6 s: nodes go soon after the stage


def cluster_config() -> dict:
    """The autoscaler's config: what ``ray up`` reads, for the ``fake_multinode`` provider."""
    return {
        "cluster_name": "moaa-autoscaling-test",
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": 1, "slot": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 3,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture(scope="module")
def autoscaling_cluster():
    import ray
    from ray.cluster_utils import AutoscalingCluster

    class Cluster(AutoscalingCluster):
        # Ray's default config file (fake_multi_node/example.yaml) is not in the wheel.
        def _generate_config(self, head_resources, worker_node_types, **kwargs):
            return cluster_config()

    bin_dir = str(Path(sys.executable).parent)  # `ray` of this environment, for start and stop
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    cluster = Cluster(head_resources={"CPU": 2}, worker_node_types={})
    # A node that stops answering is replaced after 10 s, not the default 30 s.
    cluster.start(override_env={"AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10"})
    try:
        ray.init(address="auto", log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


def worker_nodes(ray) -> list[str]:
    """Node ids of the live nodes that offer ``slot`` (the autoscaler's, never the head)."""
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and "slot" in n["Resources"]]


def wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(1)


def run_stage(ray, workdir: Path, while_running=None) -> dict:
    """``generate`` over NUM_PROMPTS prompts with p1 at [1, 2] replicas; ``while_running`` is
    called once the first rows are written. Returns the summary and what the stage left."""
    from moaa_ray.config import load_config
    from moaa_ray.pipeline.generate import generate_sft

    config = load_config(write_config(workdir, NUM_PROMPTS, [1, 2]))
    run_dir = Path(config.run_dir)
    outcome: list[dict] = []
    stage = threading.Thread(target=lambda: outcome.append(generate_sft(config, run_dir)))
    stage.start()
    wait_for_rows(run_dir)
    result = while_running() if while_running else None
    stage.join()
    rows = [r for s in sorted((run_dir / "generate").glob("part-*.parquet"))
            for r in pq.read_table(s, columns=["row_id"]).to_pylist()]  # fmt: skip
    return {"summary": outcome[0], "row_ids": [r["row_id"] for r in rows], "during": result}


def engine_actors(ray) -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "EngineActor")], limit=1000, detail=True)


def p1_calls_by_node(ray) -> Counter:
    """Finished engine calls of p1's replicas, by the node that ran them."""
    from ray.util.state import list_tasks

    p1 = {a.actor_id for a in engine_actors(ray) if a.name.startswith("p1/")}
    tasks = list_tasks(
        filters=[("func_or_class_name", "=", "EngineActor.call")],
        limit=10_000,
        raise_on_missing_output=False,
    )
    return Counter(t.node_id for t in tasks if t.state == "FINISHED" and t.actor_id in p1)


# The actors Ray Data starts once per driver, for its statistics and scheduling, not per dataset.
RAY_DATA_ACTORS = {"_StatsActor", "ActorLocationTracker", "_AutoscalingCoordinatorActor"}


def assert_cluster_back_to_the_head(ray) -> None:
    """Every worker node removed after the idle timeout; no actor or placement group of the stage
    left alive (Ray Data's own actors live as long as the driver)."""
    from ray.util.state import list_actors, list_placement_groups

    wait_until(lambda: not worker_nodes(ray), 120, "the idle worker nodes removed")
    alive = list_actors(filters=[("state", "!=", "DEAD")], limit=1000)
    assert [a.class_name for a in alive if a.class_name not in RAY_DATA_ACTORS] == []
    groups = list_placement_groups(limit=1000)
    assert [g.placement_group_id for g in groups if g.state != "REMOVED"] == []


def test_the_autoscaler_adds_the_nodes_a_pool_asks_for_and_removes_them_after(
    autoscaling_cluster, tmp_path
):
    ray = autoscaling_cluster
    assert worker_nodes(ray) == []  # the head alone: no p1 replica fits until a node is added
    result = run_stage(ray, tmp_path)

    assert result["summary"]["status"] == "done"
    assert result["summary"]["rows_written"] == NUM_PROMPTS
    assert len(result["row_ids"]) == len(set(result["row_ids"])) == NUM_PROMPTS  # each once
    calls = p1_calls_by_node(ray)
    head = ray.get_runtime_context().get_node_id()  # the driver runs on the head
    assert head not in calls and len(calls) == 2, calls  # both replicas, each on an added node
    assert min(calls.values()) > 0
    assert_cluster_back_to_the_head(ray)


def kill_node(node_id: str) -> int:
    """Kill every process of a fake node, as its provider's ``terminate_node`` does; returns how
    many. The fake provider starts a node's processes with the node's id in their environment."""
    killed = 0
    for process in psutil.process_iter():
        try:
            if process.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id:
                process.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def test_a_node_lost_mid_stage_is_replaced_and_the_pool_keeps_serving(
    autoscaling_cluster, tmp_path
):
    ray = autoscaling_cluster
    seen: set[str] = set()

    def lose_a_node() -> dict:
        wait_until(lambda: len(worker_nodes(ray)) == 2, 120, "both p1 replicas' nodes up")
        first = set(worker_nodes(ray))
        seen.update(first)
        lost = sorted(first)[0]
        assert kill_node(lost) > 0
        wait_until(
            lambda: seen.update(worker_nodes(ray)) or len(seen) > 2,
            180,
            "a replacement node launched",
        )
        return {"lost": lost, "first": first}

    result = run_stage(ray, tmp_path, lose_a_node)

    assert result["summary"]["status"] == "done"
    assert result["summary"]["rows_failed"] == 0
    assert len(result["row_ids"]) == len(set(result["row_ids"])) == NUM_PROMPTS
    lost, first = result["during"]["lost"], result["during"]["first"]
    replacement = seen - first
    assert replacement and lost not in worker_nodes(ray)
    calls = p1_calls_by_node(ray)
    assert calls[sorted(first - {lost})[0]] > 0  # the surviving replica kept serving
    assert_cluster_back_to_the_head(ray)
