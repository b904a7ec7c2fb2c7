"""The numbers the gateway keeps per model, as plain Python on its event loop.

Nothing here locks: the gateway's requests and its scrapes run on one event loop, and a
scrape copies what it reports (:meth:`ModelStats.copy`) before it leaves the loop.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds: from a no-op model's answer (~1 ms) to SageMaker's 60 s limit.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """Counts of observations per bucket, and their sum (Prometheus's histogram)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as a histogram family takes them."""
        pairs: list[tuple[str, float]] = []
        seen = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            seen += count
            pairs.append((bound, seen))
        return pairs

    def copy(self) -> Histogram:
        """An independent copy."""
        twin = Histogram(self.bounds)
        twin.counts = self.counts.copy()
        twin.total = self.total
        return twin


@dataclass
class ModelStats:
    """One model, from its LOAD until the scrape after its UNLOAD (or its failed LOAD)."""

    model_name: str  # the name it was LOADed with: an opaque id under SageMaker
    target_model: str = ""  # learnt from its invocations' X-Amzn-SageMaker-Target-Model
    loaded: bool = False
    requests: int = 0
    errors: dict[int, int] = field(default_factory=dict)  # HTTP status -> answers
    latency: Histogram = field(default_factory=Histogram)
    load_seconds: float | None = None  # its last LOAD, loaded or failed
    load_failures: dict[int, int] = field(default_factory=dict)  # HTTP status -> LOADs
    unloads: int = 0
    final_restarts: int = 0  # its worker restarts, counted at its UNLOAD

    @property
    def label(self) -> str:
        """The ``target_model`` label: the TargetModel, or the LOAD name until one is known."""
        return self.target_model or self.model_name

    def answered(self, status: int, seconds: float) -> None:
        """Count one invocation's answer."""
        self.requests += 1
        self.latency.observe(seconds)
        if status >= 400:
            self.errors[status] = self.errors.get(status, 0) + 1

    def copy(self) -> ModelStats:
        """An independent copy, for a scrape to read off the event loop."""
        return ModelStats(
            self.model_name,
            self.target_model,
            self.loaded,
            self.requests,
            dict(self.errors),
            self.latency.copy(),
            self.load_seconds,
            dict(self.load_failures),
            self.unloads,
            self.final_restarts,
        )
