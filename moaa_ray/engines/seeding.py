"""Deterministic randomness from a call's inputs, shared by the backends that make up their outputs
(``simulated``, ``function``): the same inputs give the same numbers in every process and run."""

from __future__ import annotations

import hashlib
import json


def stable_digest(*parts: object) -> bytes:
    """A sha256 digest of the parts (as JSON), for seeding ``random.Random``.

    sha256 rather than ``hash()``, which differs between processes.
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def stable_unit(*parts: object) -> float:
    """A deterministic float in [0, 1) from the parts."""
    return int.from_bytes(stable_digest(*parts)[:8], "big") / 2**64
