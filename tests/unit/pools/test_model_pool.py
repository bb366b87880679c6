"""A model's pool while it loads, over a fake ``ray``: a call waits for the first replica and is
sent at once; a pool whose every replica failed to load fails its calls."""

from __future__ import annotations

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.pools import model_pool as pools
from moaa_ray.pools.dispatch import EngineFailure


def test_a_pool_whose_every_replica_failed_to_load_fails_its_calls_at_once():
    """A step's copy of a loading pool, once its pending replicas were all dropped."""
    pool = pools.ModelPool("judge", ModelConfig(path="judge", engine="simulated"), [])
    with pytest.raises(EngineFailure, match="'judge': no replica loaded"):
        pool.submit("chat", [[{"role": "user", "content": "hi"}]])


class FakeRay:
    """``ray.wait``/``ray.get`` over ready pings: a pending replica comes up during a timed wait."""

    def __init__(self, up: set[str] | None = None):
        self.up = up or set()
        self.timeouts: list[float] = []

    def wait(self, refs, num_returns=1, timeout=None):
        self.timeouts.append(timeout)
        if timeout:
            self.up |= set(refs)
        ready = [r for r in refs if r in self.up]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        return ref


class FakeActor:
    _actor_id = "replica-1"

    def __init__(self):
        self.sent: list[tuple[str, list]] = []
        self.call = self  # actor.call.remote(...)

    def remote(self, method: str, batch: list, *args):
        self.sent.append((method, batch))
        return f"call-{len(self.sent)}"


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
