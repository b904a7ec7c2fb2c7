"""Medians and spreads of repeated measurements."""

from __future__ import annotations

import statistics
from typing import Any


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and the count of ``values`` (which must not be empty)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency(values: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds, and the count."""
    return {
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "n": len(values),
    }


def median_run(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ``rps`` (its latencies with it), and every round's rps.

    A whole round is kept rather than medians of each number, so that the req/s and the
    latencies reported belong together.
    """
    ranked = sorted(rounds, key=lambda run: run["rps"])
    return {**ranked[len(ranked) // 2], "rounds_rps": [run["rps"] for run in rounds]}
