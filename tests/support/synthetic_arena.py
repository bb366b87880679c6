"""A synthetic Arena-Hard judge for the scoring tests: its verdicts follow the model's advantage."""

from __future__ import annotations

import numpy as np

from moaa_ray.core.arena_hard import VERDICTS


def synthetic_verdict(rng: np.random.RandomState, advantage: float, model_is_a: bool) -> str | None:
    """A judge's label for one game given the model's advantage over the baseline (3% missing)."""
    if rng.rand() < 0.03:
        return None
    # 0: the model is much worse ... 4: much better
    level = int(np.digitize(advantage + rng.logistic(), [-2.0, -0.6, 0.6, 2.0]))
    return (VERDICTS[::-1] if model_is_a else VERDICTS)[level]
