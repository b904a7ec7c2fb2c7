"""The CPU budget, asserted from what the workers report: the threads each request ran with.

Each request of the test model computes with torch for a while and answers the thread
count it had, and when it started and ended (CLOCK_MONOTONIC, one clock for every
process). No timing is asserted: only which requests overlapped, and with how many threads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from harness.models import make_model_dir
from harness.polling import wait_until
from harness.processes import model_workers
from harness.servers import NativeServer
from tests.container.test_container_api import TIMEOUT, load

pytestmark = pytest.mark.server

BUDGET = 2
COMPUTES = """
    import json, os, time, torch
    def model_fn(model_dir):
        {setup}
        return model_dir
    def transform_fn(model_dir, data, content_type, accept):
        started = time.monotonic()
        threads = torch.get_num_threads()
        with open(os.path.join(model_dir, "started"), "w") as started_file:
            started_file.write(str(os.getpid()))
        x = torch.randn(192, 192)
        while time.monotonic() - started < float(data or 0):
            x = torch.tanh(x @ x.T / 192)  # runs on torch's threads
        return json.dumps({"threads": threads, "started": started, "ended": time.monotonic(),
                           "pid": os.getpid()}), "application/json"
"""


def computing_model(root: Path, name: str, setup: str = "pass") -> Path:
    return make_model_dir(
        root, name, {"inference.py": COMPUTES.replace("{setup}", setup)}, weights=False
    )


@pytest.fixture(scope="module", params=["prefork", "stock"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NativeServer]:
    """A server that shares BUDGET cores among two workers per model, of five models."""
    root = tmp_path_factory.mktemp("models")
    env = {
        "MME_WORKER_MODE": request.param,
        "MME_CPU_BUDGET": str(BUDGET),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "60",
        "MME_NUM_THREADS": "",
        "OMP_NUM_THREADS": "",
    }  # empty: not set, so cores are shared
    instance = NativeServer(root, env=env).start()
    try:
        for name in ("a", "b", "c", "hog"):
            computing_model(root, name)
        computing_model(root, "own", setup="torch.set_num_threads(1)")
        for name in ("a", "b", "c", "hog", "own"):
            assert load(instance, name).status_code == 200
        yield instance
    finally:
        instance.stop()


def compute(server: NativeServer, name: str, seconds: float) -> dict[str, Any]:
    answer = requests.post(
        f"{server.url}/models/{name}/invoke",
        data=str(seconds),
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    assert "X-Mme-Own-Threads" not in answer.headers  # between the gateway and its workers
    return {"model": name, **answer.json()}


def all_at_once(server: NativeServer, names: list[str], seconds: float) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda name: compute(server, name, seconds), names))


def most_threads_at_once(reports: list[dict[str, Any]], count: str = "threads") -> int:
    """The largest sum of threads (or of requests, ``count="requests"``) of requests that
    ran at the same moment."""
    weights = [r["threads"] if count == "threads" else 1 for r in reports]
    edges = sorted(
        [(r["started"], w) for r, w in zip(reports, weights, strict=True)]
        + [(r["ended"], -w) for r, w in zip(reports, weights, strict=True)],
        key=lambda edge: (edge[0], edge[1]),
    )  # an end before a start at a tie
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def test_one_busy_model_gets_every_core(server: NativeServer) -> None:
    assert compute(server, "a", 0.2)["threads"] == BUDGET


def test_models_computing_at_once_never_exceed_the_budget(server: NativeServer) -> None:
    reports = all_at_once(server, ["a", "b", "c"] * 3 + ["own"] * 2, 0.3)
    assert most_threads_at_once(reports) <= BUDGET
    assert {r["threads"] for r in reports if r["model"] == "own"} == {1}  # its own count
    # a grant is an even share of the cores among the requests that wait for them
    assert {r["threads"] for r in reports if r["model"] != "own"} <= {1, BUDGET}
    assert any(r["threads"] == 1 for r in reports if r["model"] != "own")


def test_the_workers_of_one_model_share_the_cores(server: NativeServer) -> None:
    reports = all_at_once(server, ["b"] * 4, 0.3)
    assert most_threads_at_once(reports) <= BUDGET
    assert most_threads_at_once(reports, count="requests") == 2  # both workers computed
    assert compute(server, "b", 0.1)["threads"] == BUDGET  # and alone again, all of them


def test_a_worker_killed_mid_request_gives_its_share_back(server: NativeServer) -> None:
    started = server.models_root / "hog" / "model" / "started"
    started.unlink(missing_ok=True)
    with ThreadPoolExecutor(1) as pool:
        hogging = pool.submit(
            requests.post,
            f"{server.url}/models/hog/invoke",
            data="600",
            headers={"Content-Type": "text/plain"},
            timeout=TIMEOUT,
        )
        assert wait_until(lambda: started.exists() and started.read_text(), 60)
        computing = int(started.read_text())
        assert computing in {w.pid for w in model_workers(server.descendants(), "hog")}
        psutil.Process(computing).kill()
        assert hogging.result().status_code == 500  # MMS: "Worker died."
    # The hog held every core; had its grant been lost, this would wait for it forever.
    assert compute(server, "c", 0.1)["threads"] == BUDGET


def test_a_request_reports_nothing_of_the_budget_to_the_client(server: NativeServer) -> None:
    answer = requests.post(
        f"{server.url}/models/own/invoke",
        data="0",
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200
    assert not any(name.lower().startswith("x-mme") for name in answer.headers)
    assert json.loads(answer.text)["threads"] == 1
