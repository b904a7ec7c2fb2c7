"""The server's Prometheus metrics, scraped on its serving port as SageMaker scrapes them.

Runs against `mme serve` by default, and against the built image with ``--target image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from harness.prometheus import of_model, scrape, value
from tests.container.test_container_api import JSON, TIMEOUT, invoke, loaded

TARGET_MODEL = "team-a/scraped-v1.tar.gz"


def test_metrics_count_a_models_requests_by_target_model_until_it_is_unloaded(
    server: Any, models_root: Path
) -> None:
    name = loaded(server, models_root, "scraped")
    statuses = [
        invoke(
            server, name, b"[[1, 2, 3]]", **{"X-Amzn-SageMaker-Target-Model": TARGET_MODEL}
        ).status_code
        for _ in range(3)
    ]
    statuses.append(invoke(server, name, b"[[1, 2", JSON).status_code)

    model = of_model(scrape(server.url), name)
    assert statuses == [200, 200, 200, 400]
    assert {sample.labels["target_model"] for sample in model} == {TARGET_MODEL}
    assert value(model, "mme_model_requests_total") == 4
    assert value(model, "mme_model_errors_total", code="400") == 1
    assert value(model, "mme_model_request_duration_seconds_count") == 4
    assert value(model, "mme_model_workers") == 1
    assert (value(model, "mme_model_resident_memory_bytes") or 0) > 0

    assert requests.delete(f"{server.url}/models/{name}", timeout=TIMEOUT).status_code == 200
    assert value(of_model(scrape(server.url), name), "mme_model_unloads_total") == 1
    assert of_model(scrape(server.url), name) == []
