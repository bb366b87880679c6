"""Stream row states through a chain of steps as one Ray Data pipeline.

A step is a picklable callable that updates a batch of states in place (it calls model pools); every
step becomes one Ray Data operator, so with streaming execution all pools work at once. States travel
as JSON strings, which keeps Arrow schemas stable however many samples or judgments a row has.

Steps only wait on engine actors, so their tasks reserve no CPU: an engine actor can hold every CPU
of the cluster (2 cores, four 0.5-CPU tiny models) and the steps still run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import ray


@dataclass(frozen=True)
class StreamStep:
    """A batch function over states, its operator name, and how many of its tasks may run at once."""

    apply: Callable[[list[dict]], None]
    name: str
    concurrency: int = 2


def _batch_function(step: StreamStep) -> Callable[[dict[str, np.ndarray]], dict]:
    """Wrap a step for Ray Data; the operator shows as the step's name in progress bars and dashboard."""

    def apply(batch: dict[str, np.ndarray]) -> dict:
        states = [json.loads(s) for s in batch["state"]]
        step.apply(states)
        return {"row_id": batch["row_id"], "state": np.array([json.dumps(s) for s in states])}

    apply.__name__ = apply.__qualname__ = step.name
    return apply


def stream_states(
    states: list[dict], steps: list[StreamStep], batch_size: int
) -> Iterator[list[dict]]:
    """Push states through ``steps``; yield finished states batch by batch as they complete."""
    items = [{"row_id": s["row_id"], "state": json.dumps(s)} for s in states]
    num_blocks = max(1, min(-(-len(items) // batch_size), 2000))  # one block per batch
    dataset = ray.data.from_items(items, override_num_blocks=num_blocks)
    for step in steps:
        dataset = dataset.map_batches(
            _batch_function(step),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=max(1, step.concurrency)),
        )
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield [json.loads(s) for s in batch["state"]]
