"""The Ray actor that holds one engine replica, and the names its replicas go by.

Each engine actor is named after its model and replica (``llama-a/0``), so the dashboard's Actors page
tells the pools apart; every pool start gets a namespace of its own (``moaa-pool-<hex>``), so a pool
started again while Ray still kills the last one's actors, or another run on the same cluster, never
finds its names taken. A restarted replica keeps its name.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import ray

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import merges_calls
from moaa_ray.engines.factory import build_engine
from moaa_ray.pools.replica import EngineError, EngineTimeout, Replica, ReplicaRestarting
from moaa_ray.redact import register_secrets


@ray.remote
class EngineActor:
    """Holds one engine (one model replica) and answers the calls the pool keeps in flight on it:
    merged into large batches, or added to a running batch, as :mod:`moaa_ray.pools.replica`
    says."""

    def __init__(self, name: str, config: ModelConfig, replica: int = 0):
        self.name = name
        self.replica = replica
        self.engine_name = config.engine
        self.path = config.path
        self.config = config
        register_secrets(config.model_dump(mode="json"))  # so this process's errors mask them
        self.engine = build_engine(config)
        self.merge = merges_calls(self.engine)
        self.scheduler: Replica | None = None

    def __repr__(self) -> str:
        """What the dashboard shows for this actor (and in its task names)."""
        replica = replica_name(self.name, self.replica)
        return f"EngineActor({replica}, engine={self.engine_name}, path={self.path})"

    async def ready(self) -> str:
        return self.name

    async def stats(self) -> dict[str, float]:
        """Engine calls and items finished by this replica, and the seconds its engine spent on
        them (summed over calls, so concurrent calls count their overlap more than once)."""
        usage = self._replica().usage
        return {"calls": usage.calls, "items": usage.items, "busy_s": usage.busy_s}

    async def call(self, method: str, items: list, *args: Any) -> list:
        """Run an engine method; the timeout starts when the call gets the engine, not when queued."""
        try:
            return await self._replica().run(method, items, *args)
        except ReplicaRestarting as exc:
            raise ReplicaRestarting(f"{self.name}: {exc}") from None
        except (EngineTimeout, EngineError) as exc:
            raise type(exc)(f"{self.name}: {exc}") from None

    def _replica(self) -> Replica:
        """The call scheduler, made on first use: it belongs to the actor's event loop."""
        if self.scheduler is None:
            from moaa_ray.metrics import engine_metrics

            counters, tags = engine_metrics(), {"model": self.name}

            def done(items: int, seconds: float) -> None:
                counters["items"].inc(items, tags=tags)
                counters["seconds"].inc(seconds, tags=tags)
                counters["items_per_s"].set(items / max(seconds, 1e-9), tags=tags)

            def hang() -> None:  # the engine's thread cannot be stopped: Ray restarts a fresh one
                asyncio.get_running_loop().call_later(1.0, os._exit, 1)

            self.scheduler = Replica(
                self.engine,
                capacity=self.config.max_batch_size,
                timeout_s=self.config.request_timeout_s,
                on_hang=hang,
                merge=self.merge,
                on_done=done,
                on_failure=lambda: counters["failures"].inc(tags=tags),
            )
        return self.scheduler


def replica_name(model: str, replica: int) -> str:
    """An engine actor's name: its model and replica index, e.g. ``llama-a/0``."""
    return f"{model}/{replica}"


def start_actors(name: str, config: ModelConfig, options: dict) -> list[Any]:
    """One named engine actor per replica, in a namespace of their own (see the module docstring)."""
    namespace = f"moaa-pool-{uuid.uuid4().hex[:12]}"
    remote = EngineActor.options  # type: ignore[attr-defined]
    return [
        remote(**options, name=replica_name(name, i), namespace=namespace).remote(name, config, i)
        for i in range(config.num_replicas[1])
    ]
