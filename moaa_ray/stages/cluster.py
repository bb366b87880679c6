"""Connecting to Ray: an existing cluster (``ray.address`` or ``$RAY_ADDRESS``) or a new local one."""

from __future__ import annotations

import os

import ray

from moaa_ray import console
from moaa_ray.config import MoaaConfig


def connect(config: MoaaConfig) -> None:
    """Join the configured or submitting cluster, or start a local one (once per process).

    ``ray.num_cpus`` only sizes a new local cluster; an existing cluster reports its own resources.
    ``address="local"`` always starts a new one, so a stale ``ray_current_cluster`` file left by an
    earlier ``ray start`` or a crashed run is never mistaken for a cluster to join. The first
    connection prints the cluster's address and dashboard and links Ray's session logs into
    ``<run_dir>/logs/ray``; actors' output reaches the console only in verbose mode.
    """
    if ray.is_initialized():
        return
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": console.is_verbose()}
    if address:
        context = ray.init(address=address, **quiet)
    else:
        context = ray.init(address="local", num_cpus=config.ray.num_cpus, **quiet)
    console.route_library_logs()
    info = context.address_info
    console.link_ray_logs(info.get("session_dir"))
    dashboard = f"http://{context.dashboard_url}" if context.dashboard_url else "not running"
    console.say(f"cluster {info.get('gcs_address') or address} · dashboard {dashboard}")
