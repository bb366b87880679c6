"""How a pool's calls reach its replicas and come back: every decision, and no Ray.

A call over many items is cut into chunks of ``max_batch_size``, sent at once round robin over the
replicas that are usable, and collected in order. What comes back decides what happens next:

- an answer settles its items;
- a failed engine call (the engine raised, or ran past ``request_timeout_s``) is split until the
  failing items are isolated; a single item is retried with backoff, on another replica first, up to
  ``max_attempts`` tries, and then reported as failed, never as output;
- a lost replica (OOM, a lost node, a crash these items caused) is left alone for a while (doubling
  up to :data:`MAX_DOWN_S`) and its chunk is retried as a failed call's is;
- a restarting replica is left alone likewise, and its chunk sent again as it was: no fault of its
  items;
- with no answer for :data:`PING_AFTER_S`, the replicas holding calls are pinged, and the calls of
  those that do not answer go to others.

Replicas still loading join as they come up (one that fails to load is dropped); a pool with no
usable replica for ``startup_timeout_s`` fails with :class:`EngineFailure`.

The :class:`Dispatcher` reaches its replicas, and reads the clock, only through a :class:`Link`:
:class:`moaa_ray.pools.model_pool.RayLink` over Ray's actors, or a fake one in tests.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams

logger = logging.getLogger(__name__)

MAX_DOWN_S = 30.0  # longest pause before a lost replica is tried again
PING_AFTER_S = 5.0  # with no answer for this long, check that replicas with calls in flight live
PING_TIMEOUT_S = 10.0  # a replica that does not answer a ping in this time is taken as lost
ANSWER_WAIT_S = 1.0  # longest wait for one answer before the pool looks at its replicas again
REPLICA_WAIT_S = 0.2  # longest wait for a replica when every chunk waits for one
# A stream step calls its pools from several threads (see pipeline/streaming.py): one admits a
# pending replica at a time.
_ADMIT_LOCK = threading.Lock()


class EngineFailure(RuntimeError):
    """A model's pool cannot serve: it failed to load, or no replica was usable for too long."""


class CallFailed(Exception):
    """An engine call raised on its replica, or ran past ``request_timeout_s``: its items may be at
    fault. The message is the replica's error."""


class ReplicaLost(Exception):
    """The replica died during the call (OOM, a lost node, or a crash its items caused).

    Args:
        kind: what the cluster called the loss (e.g. ``RayActorError``), for the log.
        message: the cluster's account of it.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ReplicaUnavailable(Exception):
    """The replica is restarting or out of reach for now; the call was not run (no fault of its
    items)."""


class Link(Protocol):
    """How a :class:`Dispatcher` reaches replicas and the clock; a token stands for a call or a
    ping in flight."""

    def key(self, replica: Any) -> Hashable:
        """An identity of the replica that survives copying the pool."""
        ...

    def send(self, replica: Any, method: str, items: list, args: tuple) -> Any:
        """Start ``method`` over ``items`` on the replica; a token for its outputs."""
        ...

    def wait(self, tokens: list, num_returns: int, timeout_s: float) -> list:
        """Those of ``tokens`` that are done, once ``num_returns`` are or ``timeout_s`` has passed."""
        ...

    def result(self, token: Any) -> list:
        """A done call's outputs, one per item.

        Raises:
            CallFailed: the engine call failed.
            ReplicaLost: the replica died.
            ReplicaUnavailable: the replica did not run the call.
        """
        ...

    def load_error(self, token: Any) -> BaseException | None:
        """Why a loading replica whose ready token is done failed to load; None if it is up."""
        ...

    def alive(self, replicas: list, timeout_s: float) -> set[Hashable]:
        """The keys of those of ``replicas`` that answer a ping within ``timeout_s``."""
        ...

    def stop(self, replica: Any) -> None:
        """Stop a replica that failed to load."""
        ...

    def cluster(self) -> str:
        """The cluster's free and total resources, for failure messages."""
        ...

    def now(self) -> float:
        """A monotonic clock, in seconds."""
        ...

    def sleep(self, seconds: float) -> None: ...


@dataclass
class Completion:
    """One item's engine output (answers, choice logprobs or a score), or why there is none."""

    output: Any
    error: str | None = None


@dataclass
class Chunk:
    """Items sent together; ``attempt`` counts failed tries of a single item."""

    indices: list[int]
    attempt: int = 0
    not_before: float = 0.0
    avoid: Any = None  # the replica that failed it last


@dataclass
class PoolCall:
    """One engine method over many items, in flight on a pool (see :meth:`Dispatcher.submit`)."""

    method: str
    items: list
    args: tuple
    queued: list[Chunk]
    in_flight: dict = field(default_factory=dict)  # token -> (chunk, replica)
    results: dict[int, Completion] = field(default_factory=dict)


@dataclass
class Dispatcher:
    """One model's replicas and the calls sent to them, as the module docstring says.

    ``actors`` are the replicas up; ``pending`` the ``(ready token, replica)`` pairs of those still
    loading. Picklable where the link is, so Ray Data steps carry it.
    """

    name: str
    config: ModelConfig
    actors: list[Any]
    pending: list[Any] = field(default_factory=list)
    link: Link = field(kw_only=True, repr=False)
    _turn: Any = field(default=None, repr=False)
    _down: dict = field(default_factory=dict, repr=False)  # replica key -> (until, pause)
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
            Chunk(list(range(i, min(i + size, len(items))))) for i in range(0, len(items), size)
        ]
        call = PoolCall(method, items, args, chunks)
        self._dispatch(call)
        return call

    def collect(self, call: PoolCall) -> list[Completion]:
        """Wait for every item of ``call``, retrying failures; a completion per item, in order.

        Raises:
            EngineFailure: no replica was usable for ``startup_timeout_s``.
        """
        last_answer = self.link.now()
        while call.queued or call.in_flight:
            self._dispatch(call)
            if not call.in_flight:  # every chunk waits for a backoff or a usable replica
                self._wait_for_a_replica(timeout_s=REPLICA_WAIT_S)
                continue
            ready = self.link.wait(list(call.in_flight), 1, ANSWER_WAIT_S)
            for token in ready:
                self._settle(call, token)
            if ready:
                last_answer = self.link.now()
            elif self.link.now() - last_answer > PING_AFTER_S:
                self._requeue_from_lost_replicas(call)
                last_answer = self.link.now()
        return [call.results[i] for i in range(len(call.items))]

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[Completion]:
        """Sample answers for each conversation."""
        return self.collect(self.submit("chat", conversations, params))

    def _wait_for_a_replica(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, or less if a pending replica comes up (or fails) meanwhile; not at all
        if one has come up already (it joins the pool)."""
        up = len(self.actors)
        if self.pending:
            self._admit_ready()  # so that the wait below is on replicas still loading
        if len(self.actors) > up:
            return
        pending = [token for token, _ in self.pending]  # other threads admit replicas too
        if pending:
            self.link.wait(pending, 1, timeout_s)
        else:
            self.link.sleep(timeout_s)

    def _requeue_from_lost_replicas(self, call: PoolCall) -> None:
        """Calls on a replica that no longer answers (its node is gone, it waits to be placed again)
        would wait forever: send them to other replicas. A replica busy with a long call still
        answers, since pings do not wait for the engine."""
        replicas = {self.link.key(r): r for _, r in call.in_flight.values()}
        alive = self.link.alive(list(replicas.values()), PING_TIMEOUT_S)
        for token, (chunk, replica) in list(call.in_flight.items()):
            if self.link.key(replica) in alive:
                continue
            logger.warning(
                "model %s: a replica stopped answering; its calls go elsewhere", self.name
            )
            del call.in_flight[token]
            self._set_down(replica)
            call.queued.append(chunk)

    def _dispatch(self, call: PoolCall) -> None:
        now = self.link.now()
        waiting = []
        for chunk in call.queued:
            replica = self._pick(chunk.avoid) if chunk.not_before <= now else None
            if replica is None:
                waiting.append(chunk)
                continue
            batch = [call.items[i] for i in chunk.indices]
            call.in_flight[self.link.send(replica, call.method, batch, call.args)] = (
                chunk,
                replica,
            )
        call.queued = waiting

    def _pick(self, avoid: Any) -> Any:
        """A usable replica, round robin, preferring one other than ``avoid``; None if none is."""
        if self.pending:
            self._admit_ready()
        if not self.actors and not self.pending:  # a pool called while loading, all failed
            raise EngineFailure(f"model {self.name!r}: no replica loaded")
        if self._turn is None:
            self._turn = itertools.count(random.randrange(1 << 16))
        now = self.link.now()
        usable = [a for a in self.actors if self._down.get(self.link.key(a), (0, 0))[0] <= now]
        if not usable:
            self._unusable_since = self._unusable_since or now
            if now - self._unusable_since > self.config.startup_timeout_s:
                raise EngineFailure(
                    f"model {self.name!r}: no usable replica for startup_timeout_s="
                    f"{self.config.startup_timeout_s:g} (replicas lost and not restarted); "
                    f"cluster has {self.link.cluster()}"
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
        ready = self.link.wait([token for token, _ in self.pending], len(self.pending), 0)
        for token, replica in [p for p in self.pending if p[0] in ready]:
            # A replica is in ``actors`` before it leaves ``pending``: other threads read both
            # without the lock, and a pool with neither fails (see _pick).
            error = self.link.load_error(token)
            if error is not None:
                logger.warning(
                    "model %s: a pending replica failed to load, dropped: %s", self.name, error
                )
                self.link.stop(replica)
            else:
                logger.info("model %s: a pending replica joined the pool", self.name)
                self.actors.append(replica)
            self.pending.remove((token, replica))

    def _settle(self, call: PoolCall, token: Any) -> None:
        chunk, replica = call.in_flight.pop(token)
        try:
            outputs = self.link.result(token)
        except CallFailed as exc:
            error = f"{self.name}: {exc}"
            logger.warning("engine call failed (%d items): %s", len(chunk.indices), error)
            self._retry(call, chunk, replica, error)
            return
        except ReplicaUnavailable:
            self._set_down(replica)  # restarting: no fault of these items, send them again
            call.queued.append(chunk)
            return
        except ReplicaLost as exc:  # died: OOM, a lost node, or a crash these items caused
            self._set_down(replica)
            logger.warning("model %s: replica lost (%s); retrying", self.name, exc.kind)
            self._retry(call, chunk, replica, f"{self.name}: replica lost: {exc}")
            return
        self._down.pop(self.link.key(replica), None)
        for index, output in zip(chunk.indices, outputs, strict=True):
            call.results[index] = Completion(output)

    def _set_down(self, replica: Any) -> None:
        """Leave a lost or restarting replica alone for a while (doubling up to ``MAX_DOWN_S``)."""
        key = self.link.key(replica)
        _, pause = self._down.get(key, (0.0, 0.25))
        pause = min(2 * pause, MAX_DOWN_S)
        self._down[key] = (self.link.now() + pause, pause)

    def _retry(self, call: PoolCall, chunk: Chunk, replica: Any, error: str) -> None:
        """Split a failed chunk to isolate failing items; retry a single item with backoff."""
        if len(chunk.indices) > 1:
            half = len(chunk.indices) // 2
            call.queued += [Chunk(chunk.indices[:half]), Chunk(chunk.indices[half:])]
            return
        attempt = chunk.attempt + 1
        if attempt >= self.config.max_attempts:
            call.results[chunk.indices[0]] = Completion(None, f"{error} (after {attempt} tries)")
            return
        delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
        call.queued.append(Chunk(chunk.indices, attempt, self.link.now() + delay, replica))
