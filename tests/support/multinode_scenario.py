"""A MoA stage on a multi-node cluster (``ray.cluster_utils.Cluster`` on 127.0.0.1) while nodes change.

Run by ``tests/ray/test_multinode.py`` in its own process, since it owns its Ray cluster:
``python -m tests.support.multinode_scenario {remove,add} WORKDIR``. Prints one JSON line.
"""

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import ray
import yaml
from ray.cluster_utils import Cluster

from moaa_ray.config import load_config
from moaa_ray.pipeline.generate import generate_sft

NUM_PROMPTS = 60


def write_config(workdir: Path, num_prompts: int, p1_replicas: list[int]) -> Path:
    prompts = workdir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(num_prompts)))
    sim = {"engine": "simulated", "num_cpus": 0, "max_batch_size": 2, "retry_backoff_s": 0.1}
    sim["simulated"] = {"latency_s": 0.3, "answer_tokens": 6}
    raw = {
        "run_dir": str(workdir / "run"),
        "models": {
            # p1's replicas each need a "slot": one per node, so a replica lives on each node.
            "p1": {"path": "p1", **sim, "num_replicas": p1_replicas, "resources": {"slot": 1}},
            "p2": {"path": "p2", **sim},
            "agg": {"path": "agg", **sim},
        },
        "generate": {
            "inputs": [{"path": str(prompts)}],
            "proposers": ["p1", "p2"],
            "aggregator": "agg",
            "sampling": {"max_new_tokens": 6},
            "batch_size": 2,
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_for_rows(run_dir: Path) -> None:
    while not list((run_dir / "generate").glob("part-*.parquet")):
        time.sleep(0.1)


def calls_per_replica() -> dict[str, int]:
    from ray.util.state import list_tasks

    tasks = list_tasks(
        filters=[("func_or_class_name", "=", "EngineActor.call")],
        limit=10_000,
        raise_on_missing_output=False,
    )
    return dict(Counter(t.actor_id for t in tasks if t.state == "FINISHED"))


def main(kind: str, workdir: Path) -> None:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"slot": 1}}
    )
    worker = cluster.add_node(num_cpus=2, resources={"slot": 1}) if kind == "remove" else None
    ray.init(address=cluster.address, log_to_driver=False)
    replicas = [2, 2] if kind == "remove" else [1, 2]
    config = load_config(write_config(workdir, NUM_PROMPTS, replicas))
    run_dir = Path(config.run_dir)
    outcome: list[dict] = []
    stage = threading.Thread(target=lambda: outcome.append(generate_sft(config, run_dir)))
    stage.start()
    wait_for_rows(run_dir)  # mid-stage; nodes change from the main thread (Cluster uses signals)
    if kind == "remove":
        cluster.remove_node(worker)
    else:
        cluster.add_node(num_cpus=2, resources={"slot": 1})
    stage.join()
    [summary] = outcome
    per_replica = calls_per_replica()
    rows = []
    for shard in sorted((run_dir / "generate").glob("part-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    print(
        json.dumps(
            {
                "summary": {k: summary[k] for k in ("status", "rows_written", "rows_failed")},
                "row_ids": [r["row_id"] for r in rows],
                "lost_references": sum(
                    1 for r in rows for p in r["proposals"] if p["content"] is None
                ),
                "calls_per_replica": sorted(per_replica.values()),
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
