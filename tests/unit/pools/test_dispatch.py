"""How a pool's calls are split across replicas, retried, requeued and timed, without Ray: the
dispatcher over fake replicas and a fake clock (tests/support/fakes.py)."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.pools.dispatch import (
    PING_AFTER_S,
    PING_TIMEOUT_S,
    CallFailed,
    Dispatcher,
    EngineFailure,
    ReplicaLost,
    ReplicaUnavailable,
)
from tests.support.fakes import FakeLink, FakeReplica

TIMEOUT = "EngineTimeout: m/0: no answer within request_timeout_s=5; restarting the replica"


def dispatcher(*replicas, pending=(), link=None, **settings) -> Dispatcher:
    config = ModelConfig(path="m", engine="simulated", **{"max_batch_size": 4, **settings})
    return Dispatcher("m", config, list(replicas), list(pending), link=link or FakeLink())


def run(pool: Dispatcher, items: list) -> list:
    return pool.collect(pool.submit("chat", items))


def outputs(completions) -> list:
    return [c.output for c in completions]


def signed(name):
    """A replica's answer: each item marked with the replica that answered it."""
    return lambda method, items, *args: [f"{name}:{item}" for item in items]


def fails_on(bad):
    """A replica's answer: a call holding ``bad`` fails, as an engine that raises does."""

    def answer(method, items, *args):
        if bad in items:
            raise CallFailed(f"EngineError: ValueError: cannot answer {bad}")
        return list(items)

    return answer


def test_a_call_is_cut_into_chunks_of_max_batch_size_sent_at_once_across_the_replicas():
    a, b = FakeReplica("a"), FakeReplica("b")
    pool = dispatcher(a, b, max_batch_size=3)
    call = pool.submit("chat", list(range(10)))
    assert sorted(a.calls + b.calls) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # before collect
    assert len(a.calls) == len(b.calls) == 2  # round robin
    completions = pool.collect(call)
    assert outputs(completions) == list(range(10))
    assert all(c.error is None for c in completions)


def test_a_call_s_arguments_go_with_every_chunk():
    seen = []
    replica = FakeReplica("a", lambda method, items, *args: seen.append((method, args)) or items)
    pool = dispatcher(replica, max_batch_size=2)
    assert outputs(pool.collect(pool.submit("score", [1, 2, 3], "prefix", ["A", "B"]))) == [1, 2, 3]
    assert seen == [("score", ("prefix", ["A", "B"]))] * 2


def test_a_failing_item_is_isolated_and_retried_with_backoff_on_another_replica_up_to_the_limit(
    caplog,
):
    a, b = FakeReplica("a", fails_on(5)), FakeReplica("b", fails_on(5))
    pool = dispatcher(a, b, max_batch_size=8, max_attempts=3, retry_backoff_s=1.0)
    with caplog.at_level(logging.WARNING):
        completions = run(pool, list(range(8)))
    assert outputs(completions) == [0, 1, 2, 3, 4, None, 6, 7]
    assert [c.error for c in completions].count(None) == 7
    assert completions[5].error == "m: EngineError: ValueError: cannot answer 5 (after 3 tries)"
    # halved until alone: [0..7], [4..7], [4, 5], then [5] alone three times, each on the other
    # replica than the last, after 1 s and then 2 s of backoff
    tries = [name for name, items in pool.link.sent if items == [5]]
    assert len(tries) == 3 and tries[0] != tries[1] != tries[2]
    assert 3.0 <= pool.link.clock < 3.5
    assert (
        "engine call failed (8 items): m: EngineError: ValueError: cannot answer 5" in caplog.text
    )


def test_a_retry_goes_to_another_replica_than_the_one_that_failed_it():
    def fails(method, items, *args):
        raise CallFailed("EngineError: RuntimeError: broken replica")

    a, b = FakeReplica("a", fails), FakeReplica("b", signed("b"))
    pool = dispatcher(a, b, max_batch_size=1, max_attempts=2, retry_backoff_s=0.0)
    assert outputs(run(pool, list(range(6)))) == [f"b:{item}" for item in range(6)]
    assert len(a.calls) == 3  # its share of the first tries, and no retry


def test_an_item_that_fails_once_is_answered_on_its_retry():
    failed = []

    def once(method, items, *args):
        if not failed:
            failed.append(items)
            raise CallFailed("EngineError: RuntimeError: flaky")
        return list(items)

    pool = dispatcher(FakeReplica("a", once), max_batch_size=1, max_attempts=2)
    completions = run(pool, ["x"])
    assert outputs(completions) == ["x"] and completions[0].error is None


def test_the_work_of_a_lost_replica_goes_to_a_live_one(caplog):
    def dies(method, items, *args):
        raise ReplicaLost("RayActorError", "The actor died unexpectedly")

    a, b = FakeReplica("a", dies), FakeReplica("b", signed("b"))
    pool = dispatcher(a, b, max_batch_size=2, max_attempts=2)
    with caplog.at_level(logging.WARNING):
        completions = run(pool, list(range(4)))
    assert outputs(completions) == ["b:0", "b:1", "b:2", "b:3"]
    assert len(a.calls) == 1  # left alone once lost, while b can serve
    assert "model m: replica lost (RayActorError); retrying" in caplog.text


def test_an_item_whose_replica_is_lost_on_every_try_fails_after_max_attempts():
    def dies(method, items, *args):
        raise ReplicaLost("RayActorError", "The actor died unexpectedly")

    pool = dispatcher(FakeReplica("a", dies), max_attempts=2, retry_backoff_s=0.0)
    [completion] = run(pool, ["x"])
    assert completion.output is None
    assert completion.error == "m: replica lost: The actor died unexpectedly (after 2 tries)"


def test_a_restarting_replica_s_chunk_is_sent_again_whole_without_spending_a_try():
    def restarting(method, items, *args):
        raise ReplicaUnavailable("m/0: replica restarts")

    a, b = FakeReplica("a", restarting), FakeReplica("b")
    pool = dispatcher(a, b, max_batch_size=4, max_attempts=1)
    completions = run(pool, list(range(8)))
    assert outputs(completions) == list(range(8))
    assert all(c.error is None for c in completions)
    assert a.calls[0] in b.calls  # the same chunk, not split


def test_a_call_past_its_timeout_is_retried_on_another_replica_and_the_replica_s_others_too():
    """The replica fails a call past ``request_timeout_s`` and restarts: its other calls come back
    untried."""
    timed_out = []

    def hangs_once(method, items, *args):
        if not timed_out:
            timed_out.append(items)
            raise CallFailed(TIMEOUT)
        raise ReplicaUnavailable("m/0: replica restarts")

    a, b = FakeReplica("a", hangs_once, delay_s=5.0), FakeReplica("b", signed("b"))
    pool = dispatcher(a, b, max_batch_size=1, max_attempts=2)
    completions = run(pool, list(range(4)))
    assert outputs(completions) == ["b:0", "b:1", "b:2", "b:3"]
    assert all(c.error is None for c in completions)


def test_an_item_that_times_out_on_every_try_fails_with_the_timeout():
    def hangs(method, items, *args):
        raise CallFailed(TIMEOUT)

    pool = dispatcher(FakeReplica("a", hangs, delay_s=5.0), max_attempts=2, retry_backoff_s=0.0)
    [completion] = run(pool, ["x"])
    assert completion.error == f"m: {TIMEOUT} (after 2 tries)"


def test_the_calls_of_a_replica_that_stops_answering_go_elsewhere_after_a_ping(caplog):
    a, b = FakeReplica("a", signed("a")), FakeReplica("b", signed("b"))
    a.go_silent()
    pool = dispatcher(a, b, max_batch_size=2)
    with caplog.at_level(logging.WARNING):
        completions = run(pool, list(range(4)))
    assert outputs(completions) == ["b:0", "b:1", "b:2", "b:3"]
    assert len(a.calls) == 1 and pool.link.pings == 1
    assert PING_AFTER_S < pool.link.clock <= PING_AFTER_S + PING_TIMEOUT_S + 2
    assert "model m: a replica stopped answering; its calls go elsewhere" in caplog.text


def test_a_late_answer_from_a_replica_taken_as_lost_is_not_used():
    a = FakeReplica("a", signed("a"), delay_s=30.0, answers_pings=False)
    b = FakeReplica("b", signed("b"))
    pool = dispatcher(a, b, max_batch_size=2)
    assert outputs(run(pool, list(range(4)))) == ["b:0", "b:1", "b:2", "b:3"]


def test_a_replica_busy_with_a_long_call_keeps_it_while_it_answers_pings():
    a, b = FakeReplica("a", signed("a"), delay_s=8.0), FakeReplica("b", signed("b"))
    pool = dispatcher(a, b, max_batch_size=2)
    answers = outputs(run(pool, list(range(4))))
    assert {answer.split(":")[0] for answer in answers} == {"a", "b"}  # a answered its own
    assert pool.link.pings == 1 and len(a.calls) == len(b.calls) == 1


@pytest.mark.parametrize("seed", range(20))
def test_every_item_is_answered_exactly_once_and_in_order_whatever_fails(seed):
    rng = random.Random(seed)
    answered: Counter = Counter()

    def flaky(method, items, *args):
        roll = rng.random()
        if roll < 0.2:
            raise CallFailed("EngineError: RuntimeError: flaky")
        if roll < 0.3:
            raise ReplicaUnavailable("replica restarts")
        if roll < 0.35:
            raise ReplicaLost("RayActorError", "died")
        answered.update(items)
        return [f"out-{item}" for item in items]

    replicas = [FakeReplica(name, flaky, delay_s=rng.random()) for name in "abc"]
    pool = dispatcher(*replicas, max_batch_size=3, max_attempts=4, retry_backoff_s=0.1)
    completions = run(pool, list(range(25)))
    assert len(completions) == 25
    for item, completion in enumerate(completions):
        if completion.error is None:
            assert completion.output == f"out-{item}" and answered[item] == 1
        else:
            assert completion.output is None and answered[item] == 0
            assert completion.error.endswith("(after 4 tries)")


def test_replicas_that_load_during_a_call_join_and_one_that_fails_to_load_is_dropped(caplog):
    link = FakeLink()
    late, broken = FakeReplica("late"), FakeReplica("broken")
    loading = [
        (link.loading(0.5), late),
        (link.loading(0.5, error=RuntimeError("no weights")), broken),
    ]
    pool = dispatcher(pending=loading, link=link)
    with caplog.at_level(logging.INFO):
        assert outputs(run(pool, [1, 2])) == [1, 2]
    assert pool.actors == [late] and pool.pending == []
    assert broken.stopped and not broken.calls
    assert "model m: a pending replica failed to load, dropped: no weights" in caplog.text
    assert "model m: a pending replica joined the pool" in caplog.text


def test_a_pool_with_no_usable_replica_for_startup_timeout_s_fails():
    def restarting(method, items, *args):
        raise ReplicaUnavailable("replica restarts")

    pool = dispatcher(FakeReplica("a", restarting), startup_timeout_s=1.0)
    with pytest.raises(EngineFailure, match=r"'m': no usable replica for startup_timeout_s=1 "):
        run(pool, ["x"])
