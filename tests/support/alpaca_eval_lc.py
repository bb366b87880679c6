"""Synthetic AlpacaEval judgments and alpaca_eval 0.6.6's own length-controlled win rate on them.

The oracle is ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`` itself (tests that
use it skip where alpaca_eval is not installed). It runs offline: its download of ``df_gamed.csv``
from the Hugging Face hub is replaced by a synthetic file in the same format
(:func:`write_df_gamed`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from moaa_ray.core.winrates import GamedComparison


def logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def answer_lengths(rng, n, mean_gap, sd_gap):
    """Model and baseline answer lengths (characters), the model's ``mean_gap`` longer on average."""
    baseline = rng.integers(500, 2500, n)
    model = np.maximum(1, baseline + np.round(rng.normal(mean_gap, sd_gap, n))).astype(int)
    return model, baseline


def synthetic_run(seed, n=800, abstain=0.03):
    """Judged comparisons with a length effect, difficulty, ties, fractions and abstentions."""
    rng = np.random.default_rng(seed)
    model_lengths, baseline_lengths = answer_lengths(rng, n, 200, 600)
    difficulty = rng.normal(0.0, 1.0, n)
    gap = (model_lengths - baseline_lengths) / np.std(model_lengths - baseline_lengths)
    p_win = logistic(0.6 + 0.8 * np.tanh(gap) - 0.5 * difficulty)
    wins = rng.random(n) < p_win
    kinds = rng.choice(["decisive", "tie", "fraction"], size=n, p=[0.8, 0.1, 0.1])
    fractions = np.clip(p_win + rng.normal(0, 0.1, n), 0, 1).round(2)
    abstained = rng.random(n) < abstain
    scores = [
        None if skip else 0.5 if kind == "tie" else float(f) if kind == "fraction" else float(w)
        for skip, kind, f, w in zip(abstained, kinds, fractions, wins, strict=True)
    ]
    return scores, model_lengths.tolist(), baseline_lengths.tolist(), difficulty


def synthetic_gamed(seed, difficulty) -> list[GamedComparison]:
    """AlpacaEval's gamed baselines: a verbose, then a concise baseline row per instruction."""
    rng = np.random.default_rng(seed + 1000)
    n = len(difficulty)
    std_delta_len = np.concatenate([-np.abs(rng.normal(1, 0.5, n)), np.abs(rng.normal(1, 0.5, n))])
    both = np.concatenate([difficulty, difficulty])
    preference = np.clip(
        logistic(-0.9 * np.tanh(std_delta_len) + 0.3 * both) + rng.normal(0, 0.1, 2 * n), 0, 1
    )
    return list(zip(preference.tolist(), std_delta_len.tolist(), both.tolist(), strict=True))


def write_df_gamed(path: Path, gamed: list[GamedComparison]) -> Path:
    """``gamed`` as AlpacaEval's ``df_gamed.csv``: the first half of the rows the verbose gamed
    baseline's, one per instruction in order, the second half the concise one's."""
    import pandas as pd

    half = len(gamed) // 2
    pd.DataFrame(
        {
            "model": ["verbose"] * half + ["concise"] * (len(gamed) - half),
            "index": [i % half for i in range(len(gamed))],
            "preference": [p for p, _, _ in gamed],
            "std_delta_len": [t for _, t, _ in gamed],
            "instruction_difficulty": [d for _, _, d in gamed],
            "not_gamed_baseline": False,
        }
    ).to_csv(path, index=False)
    return path


def alpaca_eval_lc(monkeypatch, df_gamed, scores, model_lengths, baseline_lengths, glm):
    """alpaca_eval's own get_length_controlled_winrate on annotations in its format, offline.

    Args:
        monkeypatch: pytest's, to hand alpaca_eval ``df_gamed`` instead of its download.
        df_gamed: the gamed-baseline file (:func:`write_df_gamed`).
        scores: per instruction in order, the model's score (1 win, 0.5 tie, 0 loss, None none).
        model_lengths: the model's answer length per instruction, in characters.
        baseline_lengths: the baseline's, in characters.
        glm: alpaca_eval's GLM name, e.g. ``length_controlled_v1``.
    """
    glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate")
    import pandas as pd

    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **_: str(df_gamed))
    # preference: 1 baseline wins, 2 model wins, 0 or 1.5 a tie, NaN no preference
    preference = [
        math.nan if s is None else 0.0 if s == 0.5 and i % 2 else 1.0 + s
        for i, s in enumerate(scores)
    ]
    annotations = pd.DataFrame(
        {
            "instruction": [f"instruction {i}" for i in range(len(scores))],
            "output_1": ["b" * int(length) for length in baseline_lengths],
            "output_2": ["m" * int(length) for length in model_lengths],
            "generator_1": "baseline",
            "generator_2": "model",
            "annotator": "judge",
            "preference": preference,
        }
    )
    metrics = glm_winrate.get_length_controlled_winrate(
        annotations, glm_name=glm, save_weights_dir=None, is_warn_extreme_changes=False
    )
    return metrics["length_controlled_winrate"]
