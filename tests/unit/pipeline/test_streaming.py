"""How many batches a stream step keeps in flight (pure; no Ray)."""

from types import SimpleNamespace

from moaa_ray.config import ModelConfig
from moaa_ray.pipeline.streaming import batches_in_flight


def pool(replicas: int) -> SimpleNamespace:
    return SimpleNamespace(config=ModelConfig(path="m", num_replicas=[1, replicas]))


def test_a_step_keeps_four_batches_per_replica_of_its_pools_in_flight():
    assert batches_in_flight([pool(1)]) == 4
    assert batches_in_flight([pool(4)]) == 16
    assert batches_in_flight([pool(1), pool(1), pool(2)]) == 16  # a MoA layer of three models


def test_a_step_without_pools_still_keeps_two_batches_in_flight():
    assert batches_in_flight([]) == 2
