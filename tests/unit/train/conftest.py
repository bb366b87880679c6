"""A one-process gloo group, for worker code that calls torch.distributed outside Ray Train."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """``torch.distributed`` initialized with world size 1 (gloo, file store)."""
    import torch.distributed as dist

    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()
