"""One Ray actor pool per distinct model, shared by every stage step that uses the model.

A pool asks Ray for ``max`` engine actors (each on ``num_gpus`` GPUs) and starts work once ``min`` of
them are up; on an autoscaling cluster the pending ones are what makes Ray add nodes, and they join the
pool as soon as they come up. A pool that cannot reach ``min`` actors in ``startup_timeout_s`` fails with
the resources it asked for; an engine that fails to load fails the stage with its error.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams

logger = logging.getLogger(__name__)


class EngineFailure(RuntimeError):
    """A model's actors are gone or never came up; the stage cannot go on."""


@ray.remote
class EngineActor:
    """Holds one engine (one model replica) and answers batched calls."""

    def __init__(self, name: str, config: ModelConfig):
        from moaa_ray.engines.base import build_engine

        self.name = name
        self.engine = build_engine(config)

    def ready(self) -> str:
        return self.name

    def _measured(self, method: str, conversations: list[Conversation], *args: Any) -> list:
        from moaa_ray.pipeline.metrics import engine_metrics

        counters, tags = engine_metrics(), {"model": self.name}
        started = time.monotonic()
        try:
            out = getattr(self.engine, method)(conversations, *args)
        except Exception:
            counters["failures"].inc(tags=tags)
            raise
        seconds = time.monotonic() - started
        counters["items"].inc(len(conversations), tags=tags)
        counters["seconds"].inc(seconds, tags=tags)
        counters["items_per_s"].set(len(conversations) / max(seconds, 1e-9), tags=tags)
        return out

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[str]]:
        return self._measured("chat", conversations, params)

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        return self._measured("choice_logprobs", conversations, prefix, choices)

    def score(self, conversations: list[Conversation]) -> list[float]:
        return self._measured("score", conversations)


@dataclass
class Completion:
    """One item's engine output (answers, choice logprobs or a score), or why there is none."""

    output: Any
    error: str | None = None


@dataclass
class ModelPool:
    """Handles to one model's engine actors; picklable, so Ray Data steps carry it."""

    name: str
    config: ModelConfig
    actors: list[Any]
    pending: list[Any] = field(default_factory=list)
    _turn: Any = field(default=None, repr=False)

    def _next_actor(self) -> Any:
        if self.pending:
            self._admit_ready()
        if self._turn is None:
            self._turn = itertools.count(random.randrange(1 << 16))
        return self.actors[next(self._turn) % len(self.actors)]

    def _admit_ready(self) -> None:
        """Actors that came up since the last call (e.g. on autoscaled nodes) join the rotation."""
        ready, _ = ray.wait(
            [ref for ref, _ in self.pending], num_returns=len(self.pending), timeout=0
        )
        joined = [(ref, actor) for ref, actor in self.pending if ref in ready]
        self.actors += [actor for _, actor in joined]
        self.pending = [p for p in self.pending if p not in joined]

    def submit(self, method: str, items: list, *args: Any) -> list[tuple[int, Any]]:
        """Start an engine method over ``items`` in chunks of ``max_batch_size`` across the actors.

        Returns (chunk length, ObjectRef) pairs for :meth:`collect`; submitting every model's work
        before collecting any lets a MoA layer's models run at once.
        """
        size = self.config.max_batch_size
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [(len(c), getattr(self._next_actor(), method).remote(c, *args)) for c in chunks]

    def collect(self, submitted: list[tuple[int, Any]]) -> list[Completion]:
        """Wait for submitted chunks (``request_timeout_s`` in all).

        A chunk that raises or times out yields failed completions (counted by the caller); an actor
        that died raises :class:`EngineFailure`.
        """
        results: list[Completion] = []
        deadline = time.monotonic() + self.config.request_timeout_s
        for size, ref in submitted:
            try:
                out = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
                results += [Completion(value) for value in out]
            except GetTimeoutError:
                ray.cancel(ref)
                error = f"{self.name}: no answer within request_timeout_s={self.config.request_timeout_s}"
                results += [Completion(None, error)] * size
            except RayActorError as exc:
                raise EngineFailure(f"model {self.name!r}: an engine actor died: {exc}") from exc
            except RayTaskError as exc:
                error = f"{self.name}: {type(exc.cause).__name__}: {exc.cause}"
                logger.warning("engine call failed: %s", error)
                results += [Completion(None, error)] * size
        return results

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        """Sample answers for each conversation."""
        return self.collect(self.submit("chat", conversations, params))


def start_pool(name: str, config: ModelConfig) -> ModelPool:
    """Request ``max`` actors for a model and return once ``min`` are up.

    Raises:
        EngineFailure: the model failed to load, or ``min`` actors were not placed in time.
    """
    low, high = config.num_replicas
    options = {"num_gpus": config.num_gpus, "num_cpus": config.num_cpus}
    actors = [
        EngineActor.options(**options).remote(name, config)  # type: ignore[attr-defined]
        for _ in range(high)
    ]
    refs = {a.ready.remote(): a for a in actors}
    ready, _ = ray.wait(list(refs), num_returns=low, timeout=config.startup_timeout_s)
    up = []
    for ref in ready:
        try:
            ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            stop_actors(actors)
            raise EngineFailure(f"model {name!r} ({config.path}) failed to load: {exc}") from exc
        up.append(refs[ref])
    if len(up) < low:
        stop_actors(actors)
        raise EngineFailure(
            f"model {name!r}: {len(up)}/{low} actors started within startup_timeout_s="
            f"{config.startup_timeout_s}; each needs num_gpus={config.num_gpus}, "
            f"num_cpus={config.num_cpus}; cluster has {ray.cluster_resources()}"
        )
    logger.info("pool %s: %d actors up, %d pending", name, len(up), high - len(up))
    pending = [(ref, actor) for ref, actor in refs.items() if actor not in up]
    return ModelPool(name, config, up, pending)


def stop_actors(actors: list[Any]) -> None:
    """Kill actors (frees their GPUs for the next model in staged mode)."""
    for actor in actors:
        ray.kill(actor)


def stop_pool(pool: ModelPool) -> None:
    """Kill every actor of a pool, pending ones included."""
    stop_actors(pool.actors + [actor for _, actor in pool.pending])
