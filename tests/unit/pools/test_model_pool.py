"""A model's pool while it loads, over a fake ``ray``: a call waits for the first replica and is
sent at once; a pool whose every replica failed to load fails its calls."""

from __future__ import annotations

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.pools import model_pool as pools
from moaa_ray.pools.dispatch import EngineFailure
from tests.support.fakes import FakeActor, FakeRay


def test_a_pool_whose_every_replica_failed_to_load_fails_its_calls_at_once():
    """A step's copy of a loading pool, once its pending replicas were all dropped."""
    pool = pools.ModelPool("judge", ModelConfig(path="judge", engine="simulated"), [])
    with pytest.raises(EngineFailure, match="'judge': no replica loaded"):
        pool.submit("chat", [[{"role": "user", "content": "hi"}]])


def loading_pool(actor: FakeActor) -> pools.ModelPool:
    config = ModelConfig(path="m", engine="simulated")
    return pools.ModelPool("m", config, [], pending=[("ready-m", actor)])


def never_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s with a replica up")


def test_a_call_on_a_loading_pool_waits_for_its_first_replica_and_is_sent_at_once(monkeypatch):
    """Sent when made, not when collected: a step's calls to several loading pools run together."""
    monkeypatch.setattr(pools, "ray", FakeRay())
    actor = FakeActor()
    pool = loading_pool(actor)
    conversation = [{"role": "user", "content": "hi"}]
    call = pool.submit("chat", [conversation])
    assert (pool.actors, pool.pending) == ([actor], [])
    assert actor.sent == [("chat", [conversation])] and list(call.in_flight) == ["call-1"]


def test_a_step_waiting_for_a_replica_returns_at_once_when_one_has_come_up(monkeypatch):
    fake = FakeRay(up={"ready-m"})
    monkeypatch.setattr(pools, "ray", fake)
    monkeypatch.setattr(pools.time, "sleep", never_sleep)
    actor = FakeActor()
    pool = loading_pool(actor)
    pool._wait_for_a_replica(timeout_s=5.0)
    assert pool.actors == [actor] and fake.timeouts == [0]  # admitted without waiting
