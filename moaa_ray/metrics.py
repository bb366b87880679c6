"""Custom Ray metrics, exported with Ray's own (Prometheus endpoint, Grafana panels of the dashboard).

Tagged by model or stage so a run's progress and each pool's throughput show while it runs.
"""

from __future__ import annotations

from functools import cache

from ray.util import metrics


@cache
def engine_metrics() -> dict:
    """Per-model engine counters: calls, items answered, seconds busy, failed calls."""
    tags = ("model",)
    return {
        "items": metrics.Counter("moaa_engine_items", "conversations answered", tag_keys=tags),
        "seconds": metrics.Counter(
            "moaa_engine_busy_seconds", "seconds in engine calls", tag_keys=tags
        ),
        "failures": metrics.Counter(
            "moaa_engine_failures", "engine calls that raised", tag_keys=tags
        ),
        "items_per_s": metrics.Gauge(
            "moaa_engine_items_per_s", "last call's throughput", tag_keys=tags
        ),
    }


@cache
def stage_metrics() -> dict:
    """Per-stage row counters: rows written, rejected, dropped."""
    tags = ("stage",)
    return {
        "written": metrics.Counter("moaa_rows_written", "rows written to the stage", tag_keys=tags),
        "rejected": metrics.Counter("moaa_rows_rejected", "rows sent to rejects", tag_keys=tags),
        "dropped": metrics.Counter(
            "moaa_rows_dropped", "prompts dropped (no clear winner)", tag_keys=tags
        ),
    }


def count_rows(stage: str, written: int = 0, rejected: int = 0, dropped: int = 0) -> None:
    """Add a batch's row counts to the stage's counters."""
    counters = stage_metrics()
    for key, value in (("written", written), ("rejected", rejected), ("dropped", dropped)):
        if value:
            counters[key].inc(value, tags={"stage": stage})
