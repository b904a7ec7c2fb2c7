"""Metric families as Prometheus text, written by the Prometheus client library.

The gateway and the local endpoint keep their numbers in their own structures (a model's
series must be relabelled when its TargetModel becomes known, and dropped when it is
unloaded, which the client's metric objects cannot do), and hand them over as metric
families at each scrape; the client library writes the text format.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Text format 0.0.4: what every Prometheus scraper reads (SageMaker's included).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _Families(Collector):
    """A collector that yields families collected already."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def render(families: Iterable[Metric]) -> bytes:
    """``families`` in the Prometheus text format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families)))
    return generate_latest(registry)
