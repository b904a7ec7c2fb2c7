"""`mme serve`'s Prometheus metrics on its own port, in both worker modes.

Each test loads its own models into one server per worker mode, invokes them a known
number of times and reads ``/metrics`` with the Prometheus client's parser.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness.models import make_model_dir
from harness.polling import settle
from harness.prometheus import of_model, scrape, value
from harness.servers import NativeServer
from mme import worker_records

pytestmark = pytest.mark.server

TIMEOUT = 120
JSON = "application/json"
TARGET = "X-Amzn-SageMaker-Target-Model"
# Answers its input; a body of "fail" is an error in the model's code (500).
ECHO_OR_FAIL = """
    import json
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        if json.loads(data) == "fail":
            raise RuntimeError("asked to fail")
        return data, "application/json"
"""
# Answers once the file its body names exists (a gate the test opens), or after a minute.
GATED = """
    import json, os, time
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        deadline = time.monotonic() + 60
        while not os.path.exists(json.loads(data)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return data, "application/json"
"""
LOAD_FAILS = """
    def model_fn(model_dir):
        raise RuntimeError("no model here")
"""


@pytest.fixture(scope="module", params=["prefork", "stock"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NativeServer]:
    """One server per worker mode: both must report the same."""
    root = tmp_path_factory.mktemp(f"models-{request.param}")
    instance = NativeServer(
        root, env={"MME_WORKER_MODE": request.param, "MME_CPU_BUDGET": "2"}
    ).start()
    try:
        yield instance
    finally:
        instance.stop()


def load(server: NativeServer, name: str, code: str | None = None) -> int:
    make_model_dir(
        server.models_root, name, {"inference.py": code} if code else None, weights=code is None
    )
    answer = requests.post(
        f"{server.url}/models",
        timeout=TIMEOUT,
        json={"model_name": name, "url": server.model_url(name)},
    )
    return answer.status_code


def invoke(
    server: NativeServer,
    name: str,
    body: bytes,
    content_type: str = JSON,
    target_model: str | None = None,
) -> int:
    headers = {"Content-Type": content_type, **({TARGET: target_model} if target_model else {})}
    return requests.post(
        f"{server.url}/models/{name}/invoke", data=body, headers=headers, timeout=TIMEOUT
    ).status_code


def unload(server: NativeServer, name: str) -> int:
    return requests.delete(f"{server.url}/models/{name}", timeout=TIMEOUT).status_code


def test_each_model_counts_its_requests_errors_and_latency(server: NativeServer) -> None:
    assert load(server, "alpha") == 200
    assert load(server, "beta", ECHO_OR_FAIL) == 200
    before = scrape(server.url)
    waits_before = value(before, "mme_queue_wait_seconds_count") or 0

    # Before its first invocation, a model's target_model label is its LOAD name.
    assert value(before, "mme_model_loaded", model_name="alpha", target_model="alpha") == 1
    assert value(before, "mme_model_requests_total", model_name="alpha") == 0
    statuses = [
        invoke(server, "alpha", b"[[1, 2, 3]]", target_model="team/alpha-v1.tar.gz")
        for _ in range(3)
    ]
    statuses += [
        invoke(server, "alpha", b"[[1, 2", target_model="team/alpha-v1.tar.gz") for _ in range(2)
    ]
    statuses.append(invoke(server, "alpha", b"<a/>", "application/xml"))  # no header either
    statuses += [invoke(server, "beta", b'"ok"') for _ in range(2)]
    statuses += [invoke(server, "beta", b'"fail"') for _ in range(3)]
    assert statuses == [200] * 3 + [400] * 2 + [415] + [200] * 2 + [500] * 3
    samples = scrape(server.url)

    alpha = of_model(samples, "alpha")
    assert {s.labels["target_model"] for s in alpha} == {"team/alpha-v1.tar.gz"}
    assert value(alpha, "mme_model_requests_total") == 6
    assert value(alpha, "mme_model_request_duration_seconds_count") == 6
    assert value(alpha, "mme_model_request_duration_seconds_bucket", le="+Inf") == 6
    errors = {s.labels["code"]: s.value for s in alpha if s.name == "mme_model_errors_total"}
    assert errors == {"400": 2, "415": 1}
    beta = of_model(samples, "beta")
    assert {s.labels["target_model"] for s in beta} == {"beta"}  # never told another
    assert value(beta, "mme_model_requests_total") == 5
    assert value(beta, "mme_model_request_duration_seconds_count") == 5
    assert {s.labels["code"]: s.value for s in beta if s.name == "mme_model_errors_total"} == {
        "500": 3
    }
    for model in (alpha, beta):
        assert value(model, "mme_model_loaded") == 1
        assert value(model, "mme_model_workers") == 1
        assert (value(model, "mme_model_resident_memory_bytes") or 0) > 0
        assert (value(model, "mme_model_load_duration_seconds") or 0) > 0
        assert value(model, "mme_model_unloads_total") == 0
        assert value(model, "mme_model_worker_restarts_total") == 0
    assert (value(samples, "mme_loaded_models") or 0) >= 2
    assert value(samples, "mme_cpu_budget_threads") == 2
    assert value(samples, "mme_cpu_budget_threads_in_use") == 0
    assert value(samples, "mme_busy_workers") == 0
    assert value(samples, "mme_requests_in_flight") == 0
    assert value(samples, "mme_queue_wait_seconds_count") == waits_before + 11


def test_an_unloaded_model_is_reported_once_more_then_gone(server: NativeServer) -> None:
    assert load(server, "gamma") == 200
    assert invoke(server, "gamma", b"[[1, 2, 3]]", target_model="gamma.tar.gz") == 200
    unloads_before = value(scrape(server.url), "mme_unloads_total") or 0

    assert unload(server, "gamma") == 200
    last = of_model(scrape(server.url), "gamma")
    after = scrape(server.url)

    assert value(last, "mme_model_requests_total", target_model="gamma.tar.gz") == 1
    assert value(last, "mme_model_unloads_total") == 1
    assert value(last, "mme_model_loaded") == 0
    assert value(last, "mme_model_workers") == 0
    assert of_model(after, "gamma") == []
    assert value(after, "mme_unloads_total") == unloads_before + 1


def test_a_failed_load_is_reported_once_then_gone(server: NativeServer) -> None:
    failures_before = value(scrape(server.url), "mme_load_failures_total") or 0

    assert load(server, "broken", LOAD_FAILS) == 500
    last = of_model(scrape(server.url), "broken")
    after = scrape(server.url)

    assert value(last, "mme_model_load_failures_total", code="500") == 1
    assert value(last, "mme_model_loaded") == 0
    assert (value(last, "mme_model_load_duration_seconds") or 0) > 0
    assert of_model(after, "broken") == []
    assert value(after, "mme_load_failures_total") == failures_before + 1


def test_a_worker_that_died_and_was_restarted_is_counted(server: NativeServer) -> None:
    assert load(server, "delta", ECHO_OR_FAIL) == 200
    restarts_before = value(scrape(server.url), "mme_worker_restarts_total") or 0
    [worker] = worker_records.model_workers(str(server.temp_dir()), "delta")

    worker.send_signal(signal.SIGKILL)
    worker.wait(TIMEOUT)
    # MMS starts another worker, which LOADs the model again; the invocation waits for it.
    assert invoke(server, "delta", b'"ok"') == 200

    samples = scrape(server.url)
    assert value(samples, "mme_model_worker_restarts_total", model_name="delta") == 1
    assert value(samples, "mme_model_workers", model_name="delta") == 1
    assert value(samples, "mme_worker_restarts_total") == restarts_before + 1
    assert unload(server, "delta") == 200
    assert value(of_model(scrape(server.url), "delta"), "mme_model_worker_restarts_total") == 1


def test_busy_workers_and_waiting_requests_are_seen_while_they_last(
    server: NativeServer, tmp_path: Path
) -> None:
    assert load(server, "zeta", GATED) == 200
    gate = tmp_path / "open"
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = [
            pool.submit(invoke, server, "zeta", json.dumps(str(gate)).encode()) for _ in range(2)
        ]
        # One request at the model's one worker, the other in the gateway's queue.
        samples = settle(
            lambda: scrape(server.url),
            lambda samples: value(samples, "mme_requests_in_flight") == 2,
            TIMEOUT,
            interval_s=0.05,
        )
        gate.touch()
        statuses = [answer.result() for answer in answers]

    assert value(samples, "mme_requests_in_flight") == 2
    assert value(samples, "mme_busy_workers") == 1
    assert value(samples, "mme_cpu_budget_threads_in_use") == 2  # the lone busy model: all
    assert statuses == [200, 200]
    after = scrape(server.url)
    assert (value(after, "mme_requests_in_flight"), value(after, "mme_busy_workers")) == (0, 0)
    assert value(after, "mme_model_requests_total", model_name="zeta") == 2


def test_the_metrics_answer_on_a_path_of_ones_choosing(tmp_path: Path) -> None:
    server = NativeServer(tmp_path, env={"MME_METRICS_PATH": "/custom/prometheus"}).start()
    try:
        assert load(server, "epsilon") == 200
        samples = scrape(server.url, "/custom/prometheus")
        assert requests.get(f"{server.url}/metrics", timeout=TIMEOUT).status_code == 404
    finally:
        server.stop()
    assert value(samples, "mme_model_loaded", model_name="epsilon") == 1
