"""One Ray actor pool per distinct model, shared by every stage step that uses the model.

A pool asks Ray for ``max`` engine actors (each on ``num_gpus`` GPUs) and starts work once ``min`` of
them are up; on an autoscaling cluster the pending ones make Ray add nodes, and join the pool once
placed (one that fails to load is dropped with a log line).

Failures are handled here, so stages see only final outcomes:
- a dead replica (OOM, lost node) is restarted by Ray (``max_restarts``) and its calls go to live ones;
  the pool fails only when none is usable for ``startup_timeout_s``;
- a failing chunk is split until the failing items are isolated; an item is retried with backoff, on
  another replica first, up to ``max_attempts`` times, and then reported as failed, never as output;
- ``request_timeout_s`` bounds a call's own run on its replica (a call waiting for the engine does
  not run the clock); a call past it fails, and the replica restarts, since the engine thread that
  hangs cannot be stopped.

A pool sends every chunk of a call at once, so a replica holds many calls: it merges them into
large batches, or adds them to its running batch (vLLM), as :mod:`moaa_ray.engines.replica` says.

Each engine actor is named after its model and replica (``llama-a/0``), so the dashboard's Actors page
tells the pools apart; every pool start gets a namespace of its own (``moaa-pool-<hex>``), so a pool
started again while Ray still kills the last one's actors, or another run on the same cluster, never
finds its names taken. A restarted replica keeps its name.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from moaa_ray.config import ModelConfig
from moaa_ray.core.context import Prompt
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.engines.context import context_window
from moaa_ray.engines.replica import EngineError, EngineTimeout, Replica, ReplicaRestarting
from moaa_ray.redact import register_secrets

logger = logging.getLogger(__name__)

MAX_DOWN_S = 30.0  # longest pause before a lost replica is tried again
PING_AFTER_S = 5.0  # with no answer for this long, check that replicas with calls in flight live
PING_TIMEOUT_S = 10.0  # a replica that does not answer a ping in this time is taken as lost
# A stream step calls its pools from several threads (see pipeline/streaming.py): one admits a
# pending replica at a time.
_ADMIT_LOCK = threading.Lock()
# Held by a step while it submits one batch's calls to several pools, so that every pool gets the
# batches in the same order and a batch's calls finish together rather than one behind another.
SUBMIT_IN_ORDER = threading.Lock()


class EngineFailure(RuntimeError):
    """A model's pool cannot serve: it failed to load, or no replica was usable for too long."""


@ray.remote
class EngineActor:
    """Holds one engine (one model replica) and answers the calls the pool keeps in flight on it:
    merged into large batches, or added to a running batch, as :mod:`moaa_ray.engines.replica`
    says."""

    def __init__(self, name: str, config: ModelConfig, replica: int = 0):
        from moaa_ray.engines.base import merges_calls
        from moaa_ray.engines.factory import build_engine

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


@dataclass
class Completion:
    """One item's engine output (answers, choice logprobs or a score), or why there is none."""

    output: Any
    error: str | None = None


@dataclass
class _Chunk:
    """Items sent together; ``attempt`` counts failed tries of a single item."""

    indices: list[int]
    attempt: int = 0
    not_before: float = 0.0
    avoid: Any = None  # the replica that failed it last


@dataclass
class PoolCall:
    """One engine method over many items, in flight on a pool (see :meth:`ModelPool.submit`)."""

    method: str
    items: list
    args: tuple
    queued: list[_Chunk]
    in_flight: dict = field(default_factory=dict)  # ObjectRef -> (chunk, actor)
    results: dict[int, Completion] = field(default_factory=dict)


@dataclass
class ModelPool:
    """Handles to one model's engine actors; picklable, so Ray Data steps carry it."""

    name: str
    config: ModelConfig
    actors: list[Any]
    pending: list[Any] = field(default_factory=list)  # (ready ref, actor) not up yet
    _turn: Any = field(default=None, repr=False)
    _down: dict = field(default_factory=dict, repr=False)  # actor id -> (until, pause)
    _unusable_since: float | None = field(default=None, repr=False)

    def submit(self, method: str, items: list, *args: Any) -> PoolCall:
        """Start an engine method over ``items`` in chunks of ``max_batch_size`` across replicas.

        Submitting every model's work before collecting any lets a MoA layer's models run at once.
        While the pool loads, this waits for its first replica, so that the call is sent now rather
        than when it is collected, after the calls collected before it.

        Raises:
            EngineFailure: no replica came up within ``startup_timeout_s``.
        """
        while not self.actors and self.pending:
            self._wait_for_a_replica(timeout_s=1.0)
            self._pick(None)  # raises once startup_timeout_s has passed with no replica
        size = self.config.max_batch_size
        chunks = [
            _Chunk(list(range(i, min(i + size, len(items))))) for i in range(0, len(items), size)
        ]
        call = PoolCall(method, items, args, chunks)
        self._dispatch(call)
        return call

    def collect(self, call: PoolCall) -> list[Completion]:
        """Wait for every item of ``call``, retrying failures; a completion per item, in order.

        Raises:
            EngineFailure: no replica was usable for ``startup_timeout_s``.
        """
        last_answer = time.monotonic()
        while call.queued or call.in_flight:
            self._dispatch(call)
            if not call.in_flight:  # every chunk waits for a backoff or a usable replica
                self._wait_for_a_replica(timeout_s=0.2)
                continue
            ready, _ = ray.wait(list(call.in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                self._settle(call, ref)
            if ready:
                last_answer = time.monotonic()
            elif time.monotonic() - last_answer > PING_AFTER_S:
                self._requeue_from_lost_replicas(call)
                last_answer = time.monotonic()
        return [call.results[i] for i in range(len(call.items))]

    def _wait_for_a_replica(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, or less if a pending replica comes up (or fails) meanwhile; not at all
        if one has come up already (it joins the pool)."""
        up = len(self.actors)
        if self.pending:
            self._admit_ready()  # so that the wait below is on replicas still loading
        if len(self.actors) > up:
            return
        pending = [ref for ref, _ in self.pending]  # other threads admit replicas too
        if pending:
            ray.wait(pending, num_returns=1, timeout=timeout_s)
        else:
            time.sleep(timeout_s)

    def _requeue_from_lost_replicas(self, call: PoolCall) -> None:
        """Calls on a replica that no longer answers (its node is gone, it waits to be placed again)
        would wait forever: send them to other replicas. A replica busy with a long call still
        answers, since pings do not wait for the engine."""
        actors = {a._actor_id: a for _, a in call.in_flight.values()}
        pings = {a.ready.remote(): actor_id for actor_id, a in actors.items()}
        answered, _ = ray.wait(list(pings), num_returns=len(pings), timeout=PING_TIMEOUT_S)
        alive = set()
        for ref in answered:
            try:
                ray.get(ref)
                alive.add(pings[ref])
            except (RayActorError, RayTaskError):
                pass
        for ref, (chunk, actor) in list(call.in_flight.items()):
            if actor._actor_id in alive:
                continue
            logger.warning(
                "model %s: a replica stopped answering; its calls go elsewhere", self.name
            )
            del call.in_flight[ref]
            self._set_down(actor)
            call.queued.append(chunk)

    def fit(self, prompt: Prompt, max_new_tokens: int) -> tuple[Conversation, int]:
        """The prompt fitted to this model's context window beside ``max_new_tokens`` (its parts cut
        evenly, :mod:`moaa_ray.core.context`); as it is where the window is not measured.

        Returns:
            ``(conversation, parts_cut)``.

        Raises:
            PromptTooLong: the prompt does not fit even with every part cut to nothing.
        """
        window = context_window(self.config)
        if window is None:
            return prompt.messages(), 0
        return window.fit(prompt, max_new_tokens)

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        """Sample answers for each conversation."""
        return self.collect(self.submit("chat", conversations, params))

    def _dispatch(self, call: PoolCall) -> None:
        now = time.monotonic()
        waiting = []
        for chunk in call.queued:
            actor = self._pick(chunk.avoid) if chunk.not_before <= now else None
            if actor is None:
                waiting.append(chunk)
                continue
            batch = [call.items[i] for i in chunk.indices]
            call.in_flight[actor.call.remote(call.method, batch, *call.args)] = (chunk, actor)
        call.queued = waiting

    def _pick(self, avoid: Any) -> Any:
        """A usable replica, round robin, preferring one other than ``avoid``; None if none is."""
        if self.pending:
            self._admit_ready()
        if not self.actors and not self.pending:  # a pool called while loading, all failed
            raise EngineFailure(f"model {self.name!r}: no replica loaded")
        if self._turn is None:
            self._turn = itertools.count(random.randrange(1 << 16))
        now = time.monotonic()
        usable = [a for a in self.actors if self._down.get(a._actor_id, (0, 0))[0] <= now]
        if not usable:
            self._unusable_since = self._unusable_since or now
            if now - self._unusable_since > self.config.startup_timeout_s:
                raise EngineFailure(
                    f"model {self.name!r}: no usable replica for startup_timeout_s="
                    f"{self.config.startup_timeout_s:g} (replicas lost and not restarted); "
                    f"cluster has {ray.available_resources()} free of {ray.cluster_resources()}"
                )
            return None
        self._unusable_since = None
        preferred = [a for a in usable if a is not avoid] or usable
        return preferred[next(self._turn) % len(preferred)]

    def _admit_ready(self) -> None:
        """Replicas placed since the last call (e.g. on autoscaled nodes) join the rotation."""
        with _ADMIT_LOCK:
            self._admit_ready_locked()

    def _admit_ready_locked(self) -> None:
        if not self.pending:  # admitted by another thread meanwhile
            return
        ready, _ = ray.wait(
            [ref for ref, _ in self.pending], num_returns=len(self.pending), timeout=0
        )
        for ref, actor in [p for p in self.pending if p[0] in ready]:
            # A replica is in ``actors`` before it leaves ``pending``: other threads read both
            # without the lock, and a pool with neither fails (see _pick).
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                logger.warning(
                    "model %s: a pending replica failed to load, dropped: %s", self.name, exc
                )
                ray.kill(actor)
            else:
                logger.info("model %s: a pending replica joined the pool", self.name)
                self.actors.append(actor)
            self.pending.remove((ref, actor))

    def _settle(self, call: PoolCall, ref: Any) -> None:
        chunk, actor = call.in_flight.pop(ref)
        try:
            outputs = ray.get(ref)
        except (ActorUnavailableError, RayTaskError) as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(exc, RayTaskError) and not isinstance(cause, ReplicaRestarting):
                error = f"{self.name}: {cause}"
                logger.warning("engine call failed (%d items): %s", len(chunk.indices), error)
                self._retry(call, chunk, actor, error)
                return
            self._set_down(actor)  # restarting: no fault of these items, send them again
            call.queued.append(chunk)
            return
        except RayActorError as exc:  # died: OOM, a lost node, or a crash these items caused
            self._set_down(actor)
            logger.warning("model %s: replica lost (%s); retrying", self.name, type(exc).__name__)
            self._retry(call, chunk, actor, f"{self.name}: replica lost: {exc}")
            return
        self._down.pop(actor._actor_id, None)
        for index, output in zip(chunk.indices, outputs, strict=True):
            call.results[index] = Completion(output)

    def _set_down(self, actor: Any) -> None:
        """Leave a lost or restarting replica alone for a while (doubling up to ``MAX_DOWN_S``)."""
        _, pause = self._down.get(actor._actor_id, (0.0, 0.25))
        pause = min(2 * pause, MAX_DOWN_S)
        self._down[actor._actor_id] = (time.monotonic() + pause, pause)

    def _retry(self, call: PoolCall, chunk: _Chunk, actor: Any, error: str) -> None:
        """Split a failed chunk to isolate failing items; retry a single item with backoff."""
        if len(chunk.indices) > 1:
            half = len(chunk.indices) // 2
            call.queued += [_Chunk(chunk.indices[:half]), _Chunk(chunk.indices[half:])]
            return
        attempt = chunk.attempt + 1
        if attempt >= self.config.max_attempts:
            call.results[chunk.indices[0]] = Completion(None, f"{error} (after {attempt} tries)")
            return
        delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
        call.queued.append(_Chunk(chunk.indices, attempt, time.monotonic() + delay, actor))


def error_line(error: BaseException) -> str:
    """An error in one line: Ray ends the message of an error raised in an actor with the actor's
    traceback and then the exception it raised; this is that exception (``ValueError: ...``), its
    lines joined, or the whole message joined when it holds no traceback."""
    lines = str(error).splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    tail = lines[frames[-1] + 1 :] if frames else lines
    text = " ".join(line.strip() for line in tail if line.strip() and not line.startswith(" "))
    return text or type(error).__name__


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
