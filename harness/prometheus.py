"""A server's Prometheus metrics, read with the Prometheus client's own parser."""

from __future__ import annotations

from collections import defaultdict

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def scrape(url: str, path: str = "/metrics") -> list[Sample]:
    """Every sample that ``GET url+path`` answers; fails unless it is Prometheus text."""
    answer = requests.get(f"{url}{path}", timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(PROMETHEUS_TEXT)
    return [
        sample
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``; None if none."""
    for sample in samples:
        if sample.name == name and labels.items() <= sample.labels.items():
            return float(sample.value)
    return None


def of_model(samples: list[Sample], model_name: str) -> list[Sample]:
    """The samples labelled with ``model_name``."""
    return [sample for sample in samples if sample.labels.get("model_name") == model_name]


def totals(samples: list[Sample]) -> defaultdict[str, float]:
    """Each sample name's values summed over every label but ``code``, which is kept in the
    name (``mme_endpoint_responses_total_404``); a name never seen is 0."""
    summed: defaultdict[str, float] = defaultdict(float)
    for sample in samples:
        if sample.name.endswith("_bucket"):
            continue
        code = sample.labels.get("code")
        summed[f"{sample.name}_{code}" if code else sample.name] += float(sample.value)
    return summed
