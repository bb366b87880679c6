"""How one engine replica takes the calls sent to it, so that its engine stays as full as it can be.

A pool keeps several calls in flight on each replica (see :mod:`moaa_ray.pools.dispatch`); what the
replica does with them depends on the engine:

- **A batching engine** (``hf``, reward models, rankers) runs one batch at a time, and a batch costs
  about as much with 8 conversations as with 64. Calls queue, and each engine call takes every queued
  call of the same method and arguments, up to ``capacity`` items: the engine gets one large batch
  rather than many small ones in turn. An idle engine waits :data:`MERGE_WAIT_S` after the first
  call, so that calls sent together (a stream's batches as its pool comes up) start together. If a
  merged batch fails, its calls run again one by one, so a call fails only for its own items.
- **A continuously batching engine** (``vllm``: its methods are coroutines) takes calls while it
  holds fewer than ``capacity`` items, and adds each call's items to the batch it is running.
- **Any other engine** (``openai_http``, ``simulated``, ``function``) runs one call at a time.

``timeout_s`` bounds an engine call from when it gets the engine, not from when it was queued. A call
past it fails with :class:`EngineTimeout` and the replica is spent: ``on_hang`` (the actor exits, and
Ray starts a fresh one) runs, since an engine thread that hangs cannot be stopped; every other call
on the replica then fails with :class:`ReplicaRestarting`, which is no fault of its items.

Plain asyncio, no Ray: the actor in :mod:`moaa_ray.pools.actor` wraps it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moaa_ray.redact import scrub

# How long an idle batching engine waits for the calls sent with the first before it starts: far
# less than a batch takes, and enough for calls sent at once from several threads to arrive.
MERGE_WAIT_S = 0.05


class EngineTimeout(RuntimeError):
    """An engine call ran past ``request_timeout_s`` on its replica."""


class EngineError(RuntimeError):
    """An engine call raised; the message names the original exception."""


class ReplicaRestarting(RuntimeError):
    """The replica is about to restart; the call was not tried (no fault of its items)."""


@dataclass
class Call:
    """One call's method, items and arguments, and the future its caller awaits."""

    method: str
    items: list
    args: tuple
    done: asyncio.Future

    def joins(self, other: Call) -> bool:
        """Whether the two calls can share an engine call: same method, same arguments."""
        return self.method == other.method and self.args == other.args


def take_batch(queue: deque[Call], capacity: int) -> list[Call]:
    """Remove and return the first queued call and every later one that joins it, while the items
    stay within ``capacity`` (the first call always goes, whatever its size)."""
    first = queue.popleft()
    batch, size = [first], len(first.items)
    for call in list(queue):
        if call.joins(first) and size + len(call.items) <= capacity:
            queue.remove(call)
            batch.append(call)
            size += len(call.items)
    return batch


def split_outputs(outputs: list, calls: list[Call]) -> list[list]:
    """One engine call's outputs, cut back into each merged call's share, in order."""
    shares, start = [], 0
    for call in calls:
        shares.append(outputs[start : start + len(call.items)])
        start += len(call.items)
    if start != len(outputs):
        raise EngineError(f"the engine returned {len(outputs)} outputs for {start} items")
    return shares


@dataclass
class Usage:
    """What a replica's engine did: engine calls, items, and seconds it spent on them."""

    calls: int = 0
    items: int = 0
    busy_s: float = 0.0


class Replica:
    """The calls of one engine replica, run as the module docstring says.

    Args:
        engine: the backend (see :mod:`moaa_ray.engines.base`).
        capacity: items the engine works on at once (the model's ``max_batch_size``).
        timeout_s: longest run of one engine call, from when it gets the engine.
        on_hang: runs once when a call times out (the actor schedules its own exit).
        merge: whether the engine is a batching one whose calls are merged.
        on_done: called with ``(items, seconds)`` after each engine call that succeeds.
        on_failure: called after each engine call that fails.
    """

    def __init__(
        self,
        engine: Any,
        capacity: int,
        timeout_s: float,
        on_hang: Callable[[], None],
        merge: bool = False,
        on_done: Callable[[int, float], None] = lambda items, seconds: None,
        on_failure: Callable[[], None] = lambda: None,
    ):
        self.engine = engine
        self.capacity = capacity
        self.timeout_s = timeout_s
        self.on_hang = on_hang
        self.merge = merge
        self.on_done = on_done
        self.on_failure = on_failure
        self.broken = False
        self.usage = Usage()
        self._queue: deque[Call] = deque()  # calls waiting for a one-at-a-time engine
        self._worker: asyncio.Task | None = None
        self._admitted = 0  # items a continuously batching engine holds
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()  # calls waiting for room
        self._running: set[asyncio.Task] = set()  # its engine calls, cancelled when spent

    async def run(self, method: str, items: list, *args: Any) -> list:
        """Run ``method`` over ``items`` on the engine; its outputs, one per item.

        Raises:
            EngineTimeout: the engine call ran past ``timeout_s``.
            EngineError: the engine raised.
            ReplicaRestarting: the replica is spent; the call was not run.
        """
        if self.broken:
            raise ReplicaRestarting("replica restarts after a timed-out call")
        if inspect.iscoroutinefunction(getattr(self.engine, method)):
            return await self._run_concurrently(method, items, args)
        call = Call(method, items, args, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await call.done

    async def _drain(self) -> None:
        """Run queued calls one engine call at a time, merged where the engine batches."""
        if self.merge:
            await asyncio.sleep(MERGE_WAIT_S)
        while self._queue:
            batch = (
                take_batch(self._queue, self.capacity) if self.merge else [self._queue.popleft()]
            )
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[Call]) -> None:
        if self.broken:
            for call in batch:
                call.done.set_exception(ReplicaRestarting("replica restarts"))
            return
        items = [item for call in batch for item in call.items]
        first = batch[0]
        try:
            outputs = await self._timed(
                asyncio.to_thread(getattr(self.engine, first.method), items, *first.args),
                len(items),
            )
            shares = split_outputs(outputs, batch)
        except EngineTimeout as exc:
            for call in batch:
                call.done.set_exception(exc)
            while self._queue:
                self._queue.popleft().done.set_exception(ReplicaRestarting("replica restarts"))
            return
        except EngineError as exc:
            if len(batch) == 1:
                first.done.set_exception(exc)
                return
            for call in batch:  # one by one, so that each fails only for its own items
                await self._run_batch([call])
            return
        for call, share in zip(batch, shares, strict=True):
            call.done.set_result(share)

    async def _run_concurrently(self, method: str, items: list, args: tuple) -> list:
        """Admit the call once the engine has room for its items, then run it beside the others."""
        await self._admit(len(items))
        try:
            if self.broken:
                raise ReplicaRestarting("replica restarts after a timed-out call")
            task = asyncio.ensure_future(getattr(self.engine, method)(items, *args))
            self._running.add(task)
            try:
                return await self._timed(task, len(items))
            except asyncio.CancelledError:
                if self.broken:  # cancelled because another call hung the replica
                    raise ReplicaRestarting("replica restarts after a timed-out call") from None
                raise
            finally:
                self._running.discard(task)
        finally:
            self._release(len(items))

    async def _admit(self, size: int) -> None:
        """Wait, in arrival order, until the engine holds room for ``size`` more items (a call
        larger than ``capacity`` waits for the engine to be empty)."""
        if not self._waiting and self._fits(size):
            self._admitted += size
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((size, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # admitted just as the caller gave up
                self._release(size)
            else:
                self._waiting.remove((size, turn))
            raise

    def _fits(self, size: int) -> bool:
        return self._admitted == 0 or self._admitted + size <= self.capacity

    def _release(self, size: int) -> None:
        self._admitted -= size
        while self._waiting and self._fits(self._waiting[0][0]):
            size, turn = self._waiting.popleft()
            self._admitted += size
            turn.set_result(None)

    async def _timed(self, work: Any, size: int) -> list:
        """Await an engine call under ``timeout_s``, keeping the usage figures."""
        started = time.monotonic()
        try:
            outputs = await asyncio.wait_for(work, self.timeout_s)
        except asyncio.TimeoutError:
            self.on_failure()
            self._spend()
            raise EngineTimeout(
                f"no answer within request_timeout_s={self.timeout_s:g}; restarting the replica"
            ) from None
        except Exception as exc:
            self.on_failure()
            # Re-raised as a plain error: a client library's exception (e.g. openai's
            # APIStatusError) may not unpickle on the caller, which would hide the reason.
            raise EngineError(scrub(f"{type(exc).__name__}: {exc}")) from None
        seconds = time.monotonic() - started
        self.usage.calls += 1
        self.usage.items += size
        self.usage.busy_s += seconds
        self.on_done(size, seconds)
        return outputs

    def _spend(self) -> None:
        """A call hung: refuse every other call from now on, and let the actor restart."""
        if self.broken:
            return
        self.broken = True
        for task in self._running:
            task.cancel()
        self.on_hang()
