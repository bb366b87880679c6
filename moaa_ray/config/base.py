"""What every config section shares: strict, frozen, no unknown keys; the operational marker."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys and loose types are errors; a loaded section never changes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Marks a key that changes how a stage runs but not what it writes (replicas, batch sizes, timeouts):
# a stage's fingerprint leaves it out, so changing it never invalidates finished results.
OPERATIONAL: dict[str, Any] = {"operational": True}


def check_min_max(value: list[int]) -> list[int]:
    """A ``[min, max]`` count of actors or workers, with 1 <= min <= max."""
    if len(value) != 2 or not 1 <= value[0] <= value[1]:
        raise ValueError(f"expected [min, max] with 1 <= min <= max, got {value}")
    return value
