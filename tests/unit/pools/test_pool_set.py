"""PoolSet start-up order, without Ray: every model is requested before any is waited for, and
a stage may hand out pools still loading; a model that fails to load is named in one line."""

from __future__ import annotations

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.pools import pool_set as pools
from moaa_ray.pools.dispatch import EngineFailure
from moaa_ray.pools.pool_set import PoolLaunch, PoolSet


@pytest.fixture
def recorded(monkeypatch):
    """Launch and await replaced by recorders; a model named ``broken-*`` fails to load, and the
    wait for ``interrupted-*`` is interrupted (Ctrl-C)."""
    events: list[tuple[str, str]] = []

    def launch(name: str, config: ModelConfig) -> PoolLaunch:
        events.append(("launch", name))
        return PoolLaunch(name, config, {f"ref-{name}": f"actor-{name}"})

    def wait(launch: PoolLaunch) -> str:
        events.append(("await", launch.name))
        if launch.name.startswith("broken"):
            raise EngineFailure(f"model {launch.name!r} failed to load")
        if launch.name.startswith("interrupted"):
            raise KeyboardInterrupt
        return f"pool-{launch.name}"

    monkeypatch.setattr(pools, "launch_pool", launch)
    monkeypatch.setattr(pools, "await_pool", wait)
    monkeypatch.setattr(pools, "stop_actors", lambda actors: events.append(("stop", *actors)))
    return events


def models(*names: str) -> dict[str, ModelConfig]:
    return {n: ModelConfig(path=n, engine="simulated") for n in names}


def test_every_model_loads_at_once(recorded):
    started = PoolSet(models("a", "b", "c")).start(["a", "b", "c", "a"])
    assert started == {"a": "pool-a", "b": "pool-b", "c": "pool-c"}
    assert recorded == [
        ("launch", "a"),
        ("launch", "b"),
        ("launch", "c"),
        ("await", "a"),
        ("await", "b"),
        ("await", "c"),
    ]


def test_running_pools_are_not_started_again(recorded):
    pool_set = PoolSet(models("a", "b"))
    pool_set.start(["a"])
    recorded.clear()
    assert pool_set.start(["a", "b"]) == {"a": "pool-a", "b": "pool-b"}
    assert recorded == [("launch", "b"), ("await", "b")]


def test_a_failed_load_stops_the_pools_still_loading(recorded):
    pool_set = PoolSet(models("a", "broken-b", "c"))
    with pytest.raises(EngineFailure, match="broken-b"):
        pool_set.start(["a", "broken-b", "c"])
    # a is up and stays in the set (stopped on exit); c was loading and is stopped now.
    assert ("stop", "actor-c") in recorded
    assert ("stop", "actor-a") not in recorded
    assert set(pool_set.pools) == {"a"}


def test_an_interrupted_wait_stops_the_pools_still_loading(recorded):
    pool_set = PoolSet(models("a", "interrupted-b", "c"))
    with pytest.raises(KeyboardInterrupt):
        pool_set.start(["a", "interrupted-b", "c"])
    assert ("stop", "actor-interrupted-b") in recorded and ("stop", "actor-c") in recorded
    assert set(pool_set.pools) == {"a"}


def test_launch_hands_out_loading_pools_at_once_and_wait_waits_for_them(recorded):
    pool_set = PoolSet(models("a", "b"))
    pool_set.start(["a"])
    recorded.clear()
    launched = pool_set.launch(["a", "b"])
    assert launched["a"] == "pool-a"  # running: as it is
    loading = launched["b"]
    assert (loading.actors, loading.pending) == ([], [("ref-b", "actor-b")])
    assert recorded == [("launch", "b")]  # not waited for yet
    pool_set.wait()
    assert recorded == [("launch", "b"), ("await", "b")]
    assert pool_set.pools == {"a": "pool-a", "b": "pool-b"} and not pool_set.loading


def test_pools_still_loading_are_stopped_on_exit(recorded):
    with PoolSet(models("a")) as pool_set:
        pool_set.launch(["a"])
    assert ("stop", "actor-a") in recorded and ("await", "a") not in recorded


REMOTE_LOAD_ERROR = (
    "The actor died because of an error raised in its creation task, ray::agg/0:EngineActor.__init__()"
    " (pid=648)\n"
    '  File "/work/main/moaa_ray/engines/hf.py", line 43, in __init__\n'
    "    self.tokenizer = AutoTokenizer.from_pretrained(\n"
    "                     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "ValueError: Couldn't instantiate the backend tokenizer from one of: \n"
    "(1) a `tokenizers` library serialization file, \n"
    "You need to have sentencepiece or tiktoken installed."
)


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            REMOTE_LOAD_ERROR,
            "ValueError: Couldn't instantiate the backend tokenizer from one of: (1) a "
            "`tokenizers` library serialization file, You need to have sentencepiece or tiktoken "
            "installed.",
        ),
        ("no usable replica\nfor 900 s", "no usable replica for 900 s"),
    ],
)
def test_a_load_error_is_named_in_one_line_by_the_exception_the_actor_raised(message, line):
    assert pools.error_line(RuntimeError(message)) == line
