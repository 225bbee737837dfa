"""Summaries shared by the benchmarks: throughput over repeated runs, per-call latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def rate_summary(rates: Sequence[float]) -> dict[str, Any]:
    """Median events/s and every run's figure."""
    return {
        "events_per_s_median": round(statistics.median(rates)),
        "events_per_s_runs": [round(r) for r in rates],
    }


def latency_summary(ns: Sequence[int], *, digits: int = 3) -> dict[str, float]:
    """p50, p99 and max of per-call times given in nanoseconds, in µs."""
    lat = sorted(ns)
    return {
        "p50": round(lat[len(lat) // 2] / 1000, digits),
        "p99": round(lat[int(len(lat) * 0.99)] / 1000, digits),
        "max": round(lat[-1] / 1000, 1),
    }
