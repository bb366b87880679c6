"""The Ray side of a row stage: join the cluster, then hold every model's actor pool open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moaa_ray.config import MoaaConfig
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.stages.cluster import connect


@contextmanager
def cluster_pools(config: MoaaConfig) -> Iterator[PoolSet]:
    """Connect to Ray (:func:`moaa_ray.stages.cluster.connect`), then start the config's model pools;
    they stop when the block ends."""
    connect(config)
    with PoolSet(config.models) as pools:
        yield pools
