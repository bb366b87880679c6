"""How a replica runs the calls sent to it: merged batches, continuous admission, timeouts (pure
asyncio; no Ray)."""

import asyncio
import threading

import pytest

from moaa_ray.pools.replica import (
    EngineError,
    EngineTimeout,
    Replica,
    ReplicaRestarting,
)


class BatchingEngine:
    """Records each engine call's items; fails a call holding ``poison``; hangs on ``hang``."""

    batches_items = True

    def __init__(self, release: threading.Event | None = None):
        self.calls: list[list[str]] = []
        self.release = release  # the first call waits for it, so that others queue behind it

    def chat(self, items: list[str], suffix: str) -> list[str]:
        self.calls.append(list(items))
        if self.release is not None and len(self.calls) == 1:
            self.release.wait(5)
        if "poison" in items:
            raise ValueError("poisoned")
        if "hang" in items:
            threading.Event().wait(2)
        return [item + suffix for item in items]


class ContinuousEngine:
    """A coroutine engine: records how many items it holds at once."""

    def __init__(self):
        self.holding = 0
        self.peak = 0

    async def chat(self, items: list[str]) -> list[str]:
        self.holding += len(items)
        self.peak = max(self.peak, self.holding)
        try:
            await asyncio.sleep(5 if "hang" in items else 0.05)
            return [item.upper() for item in items]
        finally:
            self.holding -= len(items)


def replica(engine, capacity=8, timeout_s=5.0, hangs=None, merge=True) -> Replica:
    return Replica(
        engine,
        capacity,
        timeout_s,
        on_hang=lambda: hangs.append(1) if hangs is not None else None,
        merge=merge,
    )


async def calls_behind_a_first_one(engine: BatchingEngine, rep: Replica, calls: list) -> list:
    """Start a first call that holds the engine, queue ``calls`` behind it, then let it go."""
    first = asyncio.create_task(rep.run("chat", ["first"], "!"))
    await asyncio.sleep(0.2)  # past MERGE_WAIT_S: the first call holds the engine alone
    rest = [asyncio.create_task(rep.run("chat", items, suffix)) for items, suffix in calls]
    await asyncio.sleep(0.05)
    assert engine.release is not None
    engine.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_calls_waiting_on_a_batching_engine_are_merged_into_one_engine_call():
    engine = BatchingEngine(threading.Event())
    rep = replica(engine, capacity=5)
    waiting = [(["a", "b"], "!"), (["c"], "?"), (["d", "e"], "!"), (["f", "g"], "!")]
    first, *rest = asyncio.run(calls_behind_a_first_one(engine, rep, waiting))
    assert first == ["first!"]
    assert rest == [["a!", "b!"], ["c?"], ["d!", "e!"], ["f!", "g!"]]
    # Same arguments merge up to the capacity; other arguments wait for a call of their own.
    assert engine.calls == [["first"], ["a", "b", "d", "e"], ["c"], ["f", "g"]]
    assert (rep.usage.calls, rep.usage.items) == (4, 8)


def test_an_engine_that_does_not_batch_runs_its_calls_one_by_one():
    engine = BatchingEngine(threading.Event())
    rep = replica(engine, merge=False)
    asyncio.run(calls_behind_a_first_one(engine, rep, [(["a"], "!"), (["b"], "!")]))
    assert engine.calls == [["first"], ["a"], ["b"]]


def test_a_failed_merged_batch_runs_again_call_by_call_so_only_its_own_call_fails():
    engine = BatchingEngine(threading.Event())
    rep = replica(engine)
    waiting = [(["a"], "!"), (["poison", "b"], "!"), (["c"], "!")]
    _, a, poisoned, c = asyncio.run(calls_behind_a_first_one(engine, rep, waiting))
    assert (a, c) == (["a!"], ["c!"])
    assert isinstance(poisoned, EngineError) and "ValueError: poisoned" in str(poisoned)
    assert engine.calls[1:] == [["a", "poison", "b", "c"], ["a"], ["poison", "b"], ["c"]]


def test_a_hung_call_times_out_spends_the_replica_and_refuses_what_waits():
    hangs: list = []
    engine = BatchingEngine(threading.Event())
    rep = replica(engine, timeout_s=0.3, hangs=hangs, merge=False)
    _, hung, waiting = asyncio.run(
        calls_behind_a_first_one(engine, rep, [(["hang"], "!"), (["a"], "!")])
    )
    assert isinstance(hung, EngineTimeout) and isinstance(waiting, ReplicaRestarting)
    assert hangs == [1] and rep.broken
    with pytest.raises(ReplicaRestarting):
        asyncio.run(rep.run("chat", ["later"], "!"))


def test_a_continuous_engine_holds_calls_up_to_its_capacity_at_once():
    engine = ContinuousEngine()
    rep = replica(engine, capacity=6)

    async def main():
        return await asyncio.gather(*(rep.run("chat", [f"x{i}", f"y{i}"]) for i in range(6)))

    outputs = asyncio.run(main())
    assert outputs == [[f"X{i}", f"Y{i}"] for i in range(6)]
    assert engine.peak == 6  # three calls of two at a time, never more
    assert rep.usage.items == 12


def test_a_call_larger_than_the_capacity_runs_alone():
    engine = ContinuousEngine()
    rep = replica(engine, capacity=2)

    async def main():
        return await asyncio.gather(rep.run("chat", ["a"]), rep.run("chat", ["b", "c", "d"]))

    assert asyncio.run(main()) == [["A"], ["B", "C", "D"]]
    assert engine.peak == 3


def test_a_hung_continuous_call_cancels_the_others_as_restarting():
    hangs: list = []
    engine = ContinuousEngine()
    rep = replica(engine, capacity=8, timeout_s=0.2, hangs=hangs)

    async def main():
        slow = asyncio.create_task(rep.run("chat", ["hang"]))
        await asyncio.sleep(0.01)
        other = asyncio.create_task(rep.run("chat", ["hang", "b"]))
        return await asyncio.gather(slow, other, return_exceptions=True)

    first, second = asyncio.run(main())
    assert isinstance(first, EngineTimeout)
    assert isinstance(second, (EngineTimeout, ReplicaRestarting))
    assert hangs == [1] and engine.holding == 0


def test_calls_sent_together_to_an_idle_engine_start_together():
    engine = BatchingEngine()
    rep = replica(engine, capacity=64)

    async def main():
        first = asyncio.create_task(rep.run("chat", ["a"], "!"))
        await asyncio.sleep(0.01)  # sent a little later, as from another thread
        return await asyncio.gather(first, rep.run("chat", ["b", "c"], "!"))

    assert asyncio.run(main()) == [["a!"], ["b!", "c!"]]
    assert engine.calls == [["a", "b", "c"]]
