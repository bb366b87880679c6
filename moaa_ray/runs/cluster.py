"""Connecting to Ray: an existing cluster (``ray.address`` or ``$RAY_ADDRESS``) or a new local one."""

from __future__ import annotations

import os

import ray

from moaa_ray.config import MoaaConfig


def connect(config: MoaaConfig) -> None:
    """Join the configured or submitting cluster, or start a local one (once per process).

    ``ray.num_cpus`` only sizes a new local cluster; an existing cluster reports its own resources.
    ``address="local"`` always starts a new one, so a stale ``ray_current_cluster`` file left by an
    earlier ``ray start`` or a crashed run is never mistaken for a cluster to join.
    """
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=config.ray.num_cpus, log_to_driver=True)
