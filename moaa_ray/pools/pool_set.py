"""Starting a stage's pools: every model's actors requested at once, waited for together, and all
stopped when the stage ends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from moaa_ray.config import ModelConfig
from moaa_ray.pools.actor import start_actors
from moaa_ray.pools.dispatch import EngineFailure
from moaa_ray.pools.model_pool import ModelPool

logger = logging.getLogger(__name__)


def error_line(error: BaseException) -> str:
    """An error in one line: Ray ends the message of an error raised in an actor with the actor's
    traceback and then the exception it raised; this is that exception (``ValueError: ...``), its
    lines joined, or the whole message joined when it holds no traceback."""
    lines = str(error).splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    tail = lines[frames[-1] + 1 :] if frames else lines
    text = " ".join(line.strip() for line in tail if line.strip() and not line.startswith(" "))
    return text or type(error).__name__


@dataclass
class PoolLaunch:
    """A pool's actors requested and pinged, not yet waited for (see :func:`await_pool`)."""

    name: str
    config: ModelConfig
    pings: dict[Any, Any]  # ready() ref -> actor

    def loading_pool(self) -> ModelPool:
        """The pool with every replica pending: its calls wait for the first to come up."""
        return ModelPool(self.name, self.config, [], list(self.pings.items()))


def launch_pool(name: str, config: ModelConfig) -> PoolLaunch:
    """Request ``max`` actors for a model and ping them; returns at once (loading goes on)."""
    options = {
        "num_gpus": config.num_gpus,
        "num_cpus": config.num_cpus,
        "resources": config.resources,
        "max_restarts": config.max_restarts,
        "max_task_retries": 0,  # the pool retries, on another replica and with backoff
    }
    actors = start_actors(name, config, options)
    return PoolLaunch(name, config, {a.ready.remote(): a for a in actors})


def await_pool(launch: PoolLaunch) -> ModelPool:
    """Wait until ``min`` of a launched pool's actors are up; the rest join as they come up.

    Raises:
        EngineFailure: the model failed to load, or ``min`` actors were not placed in time.
    """
    name, config, refs = launch.name, launch.config, launch.pings
    low, high = config.num_replicas
    ready, _ = ray.wait(list(refs), num_returns=low, timeout=config.startup_timeout_s)
    up = []
    for ref in ready:
        try:
            ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            stop_actors(list(refs.values()))
            raise EngineFailure(
                f"model {name!r} ({config.path}) failed to load: {error_line(exc)}"
            ) from exc
        up.append(refs[ref])
    if len(up) < low:
        stop_actors(list(refs.values()))
        raise EngineFailure(
            f"model {name!r}: {len(up)}/{low} actors started within startup_timeout_s="
            f"{config.startup_timeout_s:g}; each needs num_gpus={config.num_gpus}, "
            f"num_cpus={config.num_cpus}; cluster has {ray.available_resources()} free of "
            f"{ray.cluster_resources()}"
        )
    logger.info("pool %s: %d actors up, %d pending", name, len(up), high - len(up))
    pending = [(ref, actor) for ref, actor in refs.items() if actor not in up]
    return ModelPool(name, config, up, pending)


def start_pool(name: str, config: ModelConfig) -> ModelPool:
    """Request ``max`` actors for a model and return once ``min`` are up (see :func:`await_pool`)."""
    return await_pool(launch_pool(name, config))


def stop_actors(actors: list[Any]) -> None:
    """Kill actors for good (frees their GPUs for the next model in staged mode)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


class PoolSet:
    """The pools of one stage, started on demand and all stopped on exit (a context manager).

    A stage launches its pools, starts its stream (whose steps may call pools still loading: their
    calls wait for a replica), and then waits for the pools: Ray Data's start-up overlaps the models'
    load, and a model that fails to load still ends the stage at once with its error.
    """

    def __init__(self, models: dict[str, ModelConfig]):
        self.models = models
        self.pools: dict[str, ModelPool] = {}
        self.loading: dict[str, PoolLaunch] = {}

    def __enter__(self) -> PoolSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_loading()
        for name in list(self.pools):
            self.stop(name)

    def launch(self, names: list[str] | tuple[str, ...]) -> dict[str, ModelPool]:
        """The pools of ``names`` at once; those not running yet load (see :meth:`wait`)."""
        for name in dict.fromkeys(names):
            if name not in self.pools and name not in self.loading:
                self.loading[name] = launch_pool(name, self.models[name])
        return {
            name: self.pools[name] if name in self.pools else self.loading[name].loading_pool()
            for name in names
        }

    def wait(self) -> None:
        """Wait until every launched pool has ``min`` replicas up (see :func:`await_pool`).

        All load at once, so this takes the slowest model's load, not the sum of all. If one fails
        (or the wait is interrupted), the pools still loading are stopped; those up stay in the set,
        stopped on its exit.
        """
        try:
            for name, launch in list(self.loading.items()):
                self.pools[name] = await_pool(launch)
                del self.loading[name]
        except BaseException:
            self._stop_loading()
            raise

    def start(self, names: list[str] | tuple[str, ...]) -> dict[str, ModelPool]:
        """The pools of ``names``, once up: :meth:`launch`, then :meth:`wait`."""
        self.launch(names)
        self.wait()
        return {name: self.pools[name] for name in names}

    def _stop_loading(self) -> None:
        for launch in self.loading.values():
            stop_actors(list(launch.pings.values()))
        self.loading.clear()

    def only(self, name: str) -> ModelPool:
        """The pool of ``name`` with every other pool stopped (staged mode: one model at a time)."""
        for other in [n for n in self.pools if n != name]:
            self.stop(other)
        return self.start([name])[name]

    def stop(self, name: str) -> None:
        """Stop one pool, pending replicas included."""
        pool = self.pools.pop(name)
        stop_actors(pool.actors + [actor for _, actor in pool.pending])

    def describe(self) -> str:
        """The pools and the cluster's free resources, for stall and failure messages."""
        pools = ", ".join(
            f"{name}: {len(p.actors)} up, {len(p.pending)} pending"
            for name, p in self.pools.items()
        )
        return (
            f"pools: {pools or 'none'}; cluster has {ray.available_resources()} free of "
            f"{ray.cluster_resources()}"
        )
