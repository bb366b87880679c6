"""The end-to-end benchmarks' judge panel: each judge's agreement with the verifier beside the MoA
reward model's."""

from __future__ import annotations

from typing import Any


def judge_bars(ax: Any, judges: dict[str, float], ensemble: float) -> None:
    """Bars of each judge's agreement (%, grey) and the MoA reward model's (blue), labelled."""
    labels = [*judges, "MoA RM"]
    agreement = [*judges.values(), ensemble]
    bars = ax.bar(labels, agreement, color=["#999"] * len(judges) + ["#4c72b0"])
    ax.bar_label(bars, fmt="%.1f")
