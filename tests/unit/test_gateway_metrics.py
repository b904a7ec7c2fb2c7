"""The gateway's metrics bookkeeping, driven with stand-in answers instead of MMS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness.prometheus import PROMETHEUS_TEXT, of_model, value
from mme.gateway import metrics as gateway_metrics
from mme.gateway.http import Request, Response
from mme.gateway.metrics import GatewayMetrics


def answering(status: int) -> gateway_metrics.Handler:
    async def answer(request: Request) -> Response:
        return Response(status)

    return answer


def load_request(name: str) -> Request:
    return Request("POST", "/models", [], json.dumps({"model_name": name, "url": "/m"}).encode())


def run(metrics: GatewayMetrics, request: Request, status: int = 200) -> Response:
    return asyncio.run(metrics.measure(request, answering(status)))


def scrape(metrics: GatewayMetrics) -> list[Sample]:
    answer = run(metrics, Request("GET", "/metrics"), status=503)  # never passed on
    assert answer.status == 200
    assert answer.header(b"content-type") == PROMETHEUS_TEXT.encode() + b"; charset=utf-8"
    return [
        sample
        for family in text_string_to_metric_families(answer.body.decode())
        for sample in family.samples
    ]


@pytest.fixture
def metrics(tmp_path: Path) -> GatewayMetrics:
    return GatewayMetrics("/metrics", str(tmp_path), workers_per_model=1)


def test_unloaded_models_are_dropped_in_time_when_no_scrape_comes(
    metrics: GatewayMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(gateway_metrics.time, "monotonic", lambda: now[0])
    for name in ("one", "two"):
        run(metrics, load_request(name))
        run(metrics, Request("DELETE", f"/models/{name}"))
        now[0] += gateway_metrics.RETIRED_KEEP_S / 2 + 1

    run(metrics, load_request("three"))
    run(metrics, Request("DELETE", "/models/three"))  # retiring it drops "one"

    names = {s.labels.get("model_name") for s in scrape(metrics)} - {None}
    assert names == {"two", "three"}


def test_a_model_loaded_again_before_the_scrape_keeps_its_series(
    metrics: GatewayMetrics,
) -> None:
    run(metrics, load_request("again"))
    run(metrics, Request("POST", "/models/again/invoke"))
    run(metrics, Request("DELETE", "/models/again"))
    run(metrics, load_request("again"))

    for _ in range(2):
        samples = of_model(scrape(metrics), "again")
        assert value(samples, "mme_model_loaded") == 1
        assert value(samples, "mme_model_requests_total") == 1
        assert value(samples, "mme_model_unloads_total") == 1


def test_nothing_the_client_names_becomes_a_series_unless_it_was_loaded(
    metrics: GatewayMetrics,
) -> None:
    run(metrics, Request("POST", "/models/never-loaded/invoke"), status=404)
    run(metrics, Request("POST", "/models", [], b"not json"), status=400)
    run(metrics, Request("DELETE", "/models/never-loaded"), status=404)

    assert [s for s in scrape(metrics) if "model_name" in s.labels] == []


def test_a_conflicting_load_neither_fails_nor_retires_the_model(
    metrics: GatewayMetrics,
) -> None:
    run(metrics, load_request("twice"))
    run(metrics, load_request("twice"), status=409)

    for _ in range(2):
        samples = scrape(metrics)
        assert value(samples, "mme_model_loaded", model_name="twice") == 1
        assert value(samples, "mme_load_failures_total") == 0
