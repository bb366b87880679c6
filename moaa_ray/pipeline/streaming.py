"""Stream row states through a chain of steps as one Ray Data pipeline.

A step is a picklable callable that updates a batch of states in place (it calls model pools); every
step becomes one Ray Data operator, so with streaming execution all pools work at once. States travel
as JSON strings, which keeps Arrow schemas stable however many samples or judgments a row has.

A step only waits on engine actors, so it runs as one threaded Ray Data actor on the driver's node
that reserves no CPU and keeps :func:`batches_in_flight` batches at once: enough to keep every
replica's engine full. One long-lived process per step, rather than a task per batch, is what lets
2 cores drive many pools (see ``benchmarks/results/orchestration.json``).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import ray
from ray.util.annotations import RayDeprecationWarning
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from moaa_ray.engines.context import context_window

logger = logging.getLogger(__name__)
T = TypeVar("T")
# A stage's row state: a JSON-able dict (a TypedDict such as core.moa.MoaRow) with a "row_id".
State = TypeVar("State", bound=Mapping[str, Any])
_END = object()  # the end of an iterator, in place of its first item


@dataclass(frozen=True)
class StreamStep(Generic[State]):
    """A batch function over states, its operator name, and the pools it calls."""

    apply: Callable[[list[State]], None]
    name: str
    pools: Sequence[Any] = ()  # ModelPool; sizes how many batches the step keeps in flight


def batches_in_flight(pools: Sequence[Any], batch_size: int) -> int:
    """Batches a step keeps in flight: per replica of its pools, enough to hold twice what the
    replica's engine works on at once (``max_batch_size`` conversations; at least 4 batches).

    Every batch makes at least one call to each pool it uses, so this many keep every engine full,
    with the next calls waiting on it, while other batches are decoded, dispatched and collected: a
    vLLM replica gets the sequences it batches continuously, an hf replica a full batch to merge.
    """
    return max(
        2,
        sum(
            p.config.num_replicas[1] * max(4, -(-2 * p.config.max_batch_size // batch_size))
            for p in pools
        ),
    )


class _StepActor(Generic[State]):
    """A Ray Data actor running one step over batches, several at once on threads."""

    def __init__(self, step: StreamStep[State]):
        self.step = step
        # The tokenizers that fit prompts to the pools' context windows load now, while the pools
        # load, rather than on the first batch: a later MoA layer's step would otherwise hold its
        # first prompts back (half a second for a small model) while its engine idles.
        for pool in step.pools:
            try:
                context_window(pool.config)
            except Exception as exc:  # the first batch that needs it raises it, with its context
                logger.debug(
                    "step %s: the context window of %s not loaded: %s",
                    step.name,
                    pool.config.path,
                    exc,
                )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        states: list[State] = [json.loads(s) for s in batch["state"]]
        self.step.apply(states)
        return {"row_id": batch["row_id"], "state": np.array([json.dumps(s) for s in states])}


def stream_states(
    states: list[State],
    steps: list[StreamStep[State]],
    batch_size: int,
    starting: Callable[[], None] | None = None,
) -> Iterator[list[State]]:
    """Push states through ``steps``; yield finished states batch by batch as they complete.

    ``starting`` (e.g. waiting for the steps' pools to load) runs while the stream starts its
    operators; nothing is yielded before it returns, and what it raises ends the stream.
    """
    items = [{"row_id": s["row_id"], "state": json.dumps(s)} for s in states]
    num_blocks = max(1, min(-(-len(items) // batch_size), 2000))  # one block per batch
    dataset = ray.data.from_items(items, override_num_blocks=num_blocks)
    driver_node = ray.get_runtime_context().get_node_id()
    for step in steps:
        in_flight = batches_in_flight(step.pools, batch_size)
        # Named after the step, so progress bars and the dashboard show "MapBatches(judges)".
        actor_class = type(step.name, (_StepActor,), {})
        with warnings.catch_warnings():
            # Ray 2.60 takes max_restarts and scheduling_strategy only as its deprecated
            # ray_remote_args (to go in Ray 2.64; ray is pinned to 2.60.0).
            warnings.simplefilter("ignore", RayDeprecationWarning)
            dataset = dataset.map_batches(
                actor_class,
                fn_constructor_args=(step,),
                batch_size=batch_size,
                batch_format="numpy",
                num_cpus=0,
                # On the driver's node, never restarted: a step holds no state worth a restart,
                # and the job ends with its driver's node anyway. (Ray warns on the console about
                # restartable actors whose arguments are in the object store, as Ray Data's are.)
                scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
                max_restarts=0,
                compute=ray.data.ActorPoolStrategy(
                    size=1,
                    max_tasks_in_flight_per_actor=in_flight,
                    max_concurrent_calls_per_actor=in_flight,
                    enable_true_multi_threading=True,
                ),
            )
    # Ray Data polls each task's memory from a thread of its own; a step's batches are small rows.
    dataset.context.memory_usage_poll_interval_s = None
    batches = dataset.iter_batches(batch_size=None, batch_format="numpy")
    if starting is not None:
        batches = started_during(batches, starting)
    for batch in batches:
        yield [json.loads(s) for s in batch["state"]]


def started_during(iterable: Iterable[T], wait: Callable[[], None]) -> Iterator[T]:
    """``iterable``'s items, the first fetched in a thread while ``wait`` runs, then as usual.

    If ``wait`` raises, its exception propagates, and the thread is left to end with the stream:
    once its pools are stopped, the stream's calls fail within their retries.
    """
    items = iter(iterable)
    first: list[tuple[Any, BaseException | None]] = []  # (the first item or _END, its error)

    def advance() -> None:
        try:
            first.append((next(items, _END), None))
        except BaseException as exc:  # handed to the caller below
            first.append((_END, exc))

    thread = threading.Thread(target=advance, name="stream-start", daemon=True)
    thread.start()
    wait()
    thread.join()
    item, error = first[0]
    if error is not None:
        raise error
    if item is not _END:
        yield item
        yield from items
