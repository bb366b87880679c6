"""How many batches a stream step keeps in flight, and a stream started while its pools load
(pure; no Ray)."""

import threading
import time
from types import SimpleNamespace

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.pipeline.streaming import batches_in_flight, started_during


def pool(replicas: int, engine: str = "simulated", **kwargs) -> SimpleNamespace:
    config = ModelConfig(path="m", engine=engine, num_replicas=[1, replicas], **kwargs)
    return SimpleNamespace(config=config)


def test_a_step_keeps_four_batches_per_replica_of_its_pools_in_flight():
    assert batches_in_flight([pool(1)], batch_size=16) == 4
    assert batches_in_flight([pool(4)], batch_size=16) == 16
    assert batches_in_flight([pool(1), pool(1), pool(2)], 16) == 16  # a MoA layer of three models


def test_a_step_keeps_enough_batches_to_fill_each_engine_twice():
    # vLLM runs up to 256 sequences at once: 64 batches of 8 rows hold 512 conversations.
    assert batches_in_flight([pool(1, "vllm")], batch_size=8) == 64
    assert batches_in_flight([pool(2, "hf")], batch_size=8) == 2 * 16
    assert batches_in_flight([pool(1, "hf", max_batch_size=4)], batch_size=8) == 4


def test_a_step_without_pools_still_keeps_two_batches_in_flight():
    assert batches_in_flight([], batch_size=8) == 2


def test_the_stream_starts_while_its_pools_load():
    """The first item is produced while ``wait`` runs: it cannot return until production began."""
    producing = threading.Event()

    def batches():
        producing.set()
        yield "first"
        yield "second"

    def wait():
        assert producing.wait(timeout=10), "the stream did not start during the wait"

    assert list(started_during(batches(), wait)) == ["first", "second"]


def test_nothing_is_yielded_before_the_wait_returns_and_its_error_ends_the_stream():
    order = []

    def batches():
        order.append("produced")
        yield "first"

    def wait():
        time.sleep(0.2)  # the first item is ready meanwhile
        order.append("waited")
        raise RuntimeError("model 'judge' failed to load")

    stream = started_during(batches(), wait)
    with pytest.raises(RuntimeError, match="failed to load"):
        next(stream)
    assert order == ["produced", "waited"]


def test_a_stream_that_fails_at_once_fails_after_the_wait():
    def batches():
        raise ValueError("bad step")
        yield  # a generator

    waited = []
    with pytest.raises(ValueError, match="bad step"):
        list(started_during(batches(), lambda: waited.append(True)))
    assert waited == [True]


def test_an_empty_stream_yields_nothing():
    assert list(started_during(iter([]), lambda: None)) == []
