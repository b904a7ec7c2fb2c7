"""A model's workers sharing one copy of it (prefork, MME_WORKERS_SHARE_MODEL on, the
default): MMS's connections served on threads of one worker process, end to end."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.models import make_model_dir
from harness.polling import wait_until
from harness.processes import alive, model_processes, model_workers
from harness.prometheus import scrape, value
from harness.servers import NativeServer
from mme.capacity import PerModel
from tests.prefork.conftest import ready_log
from tests.serving.test_cpu_budget import compute

TIMEOUT_S = 120
WITHIN_S = 30
WORKERS = 3

# Counts its loads in a file; each request sleeps as long as its body says and answers
# which process and thread served it.
COUNTING = """
    import json, os, threading, time
    def model_fn(model_dir):
        with open(os.path.join(model_dir, "loads"), "a") as loads:
            loads.write(f"{os.getpid()}\\n")
        return model_dir
    def transform_fn(model_dir, data, content_type, accept):
        started = time.monotonic()
        time.sleep(float(data or 0))
        return json.dumps({"pid": os.getpid(), "thread": threading.get_ident(),
                           "started": started, "ended": time.monotonic()}), "application/json"
"""
FAILING = """
    def model_fn(model_dir):
        raise RuntimeError("this model cannot load")
"""


def _server(root: Path, share: str) -> NativeServer:
    return NativeServer(
        root,
        env={
            "MME_WORKER_MODE": "prefork",
            "MME_WORKERS_SHARE_MODEL": share,
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS),
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "60",
            "MME_CPU_BUDGET": str(WORKERS),  # a request each (they sleep; they do not compute)
        },
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """`mme serve` whose models have WORKERS workers, sharing each model (the default)."""
    instance = _server(tmp_path_factory.mktemp("models"), "on").start()
    try:
        ready_log(instance)
        yield instance
    finally:
        instance.stop()


def _loaded(server: NativeServer, name: str, code: str = COUNTING) -> requests.Response:
    make_model_dir(server.models_root, name, {"inference.py": code}, weights=False)
    return requests.post(
        f"{server.url}/models",
        json={"model_name": name, "url": server.model_url(name)},
        timeout=TIMEOUT_S,
    )


def _invoke(server: NativeServer, name: str, seconds: float = 0) -> dict[str, Any]:
    return compute(server, name, seconds)


def _at_once(server: NativeServer, name: str, count: int, seconds: float) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: _invoke(server, name, seconds), range(count)))


def _loads(server: NativeServer, name: str) -> list[str]:
    return (server.models_root / name / "model" / "loads").read_text().split()


def _overlapping(reports: list[dict[str, Any]]) -> int:
    """The most requests that ran at one moment."""
    edges = sorted([(r["started"], 1) for r in reports] + [(r["ended"], -1) for r in reports])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def _pipes(server: NativeServer) -> list[str]:
    """The named pipes that workers made for MMS's log readers, left in the server's folder."""
    folder = str(server.temp_dir())
    return [
        name
        for name in os.listdir(folder)
        if stat.S_ISFIFO(os.lstat(os.path.join(folder, name)).st_mode)
    ]


def test_a_models_workers_are_threads_of_one_process_with_one_copy(
    server: NativeServer,
) -> None:
    assert _loaded(server, "shared").status_code == 200
    described = requests.get(f"{server.url}/models/shared", timeout=TIMEOUT_S).json()
    described = described[0] if isinstance(described, list) else described
    assert len(described["workers"]) == WORKERS  # MMS has its workers
    [worker] = model_workers(server.descendants(), "shared")  # one process serves them
    # as mme.capacity counts it: the main, watchdog and feed threads, and one per more worker
    per_model = PerModel(WORKERS, prefork=True, share=True)
    assert worker.num_threads() == per_model.tasks - per_model.java_threads - 1
    assert _loads(server, "shared") == [str(worker.pid)]  # model_fn ran once
    reports = _at_once(server, "shared", 2 * WORKERS, 1.0)
    assert {r["pid"] for r in reports} == {worker.pid}
    assert len({r["thread"] for r in reports}) == WORKERS
    assert _overlapping(reports) == WORKERS  # every worker answered at the same time
    assert value(scrape(server.url), "mme_model_workers", model_name="shared") == WORKERS


def test_unload_ends_the_process_and_leaves_no_pipe(server: NativeServer) -> None:
    before = set(_pipes(server))
    assert _loaded(server, "brief").status_code == 200
    _at_once(server, "brief", WORKERS, 0.2)
    family = model_processes(server.descendants(), "brief")
    assert len(family) == 2  # the launcher's stand-in and the one worker
    assert len(set(_pipes(server)) - before) == 2 * WORKERS  # each worker's stdout, stderr
    assert requests.delete(f"{server.url}/models/brief", timeout=TIMEOUT_S).status_code == 200
    assert not any(alive(p) for p in family)  # the UNLOAD answers once they are gone
    assert wait_until(lambda: set(_pipes(server)) <= before, WITHIN_S)


def test_a_killed_worker_process_is_replaced_with_one_process_again(
    server: NativeServer,
) -> None:
    assert _loaded(server, "victim").status_code == 200
    first = _invoke(server, "victim")["pid"]
    os.kill(first, signal.SIGKILL)

    def served_again() -> bool:
        try:
            return _invoke(server, "victim")["pid"] != first
        except AssertionError:
            return False  # answered with an error while MMS restarts the workers

    assert wait_until(served_again, TIMEOUT_S)

    def restarted() -> bool:
        reports = _at_once(server, "victim", 2 * WORKERS, 0.5)
        return len({r["thread"] for r in reports}) == WORKERS

    assert wait_until(restarted, TIMEOUT_S)  # every worker of MMS serves again...
    [worker] = model_workers(server.descendants(), "victim")  # ...from one process
    assert _loads(server, "victim") == [str(first), str(worker.pid)]


def test_a_failed_load_fails_every_worker_and_leaves_nothing(server: NativeServer) -> None:
    answer = _loaded(server, "broken", FAILING)
    assert answer.status_code == 500
    assert "this model cannot load" in answer.text
    assert wait_until(lambda: not model_processes(server.descendants(), "broken"), WITHIN_S)
    assert _loaded(server, "after").status_code == 200  # the server serves on
    assert _invoke(server, "after")["pid"] > 0


def test_with_sharing_off_each_worker_is_a_process_that_loads(tmp_path: Path) -> None:
    instance = _server(tmp_path, "off").start()
    try:
        ready_log(instance)
        assert _loaded(instance, "apart").status_code == 200
        workers = {w.pid for w in model_workers(instance.descendants(), "apart")}
        assert len(workers) == WORKERS
        assert sorted(_loads(instance, "apart")) == sorted(map(str, workers))
        reports = _at_once(instance, "apart", 2 * WORKERS, 0.5)
        assert {r["pid"] for r in reports} == workers
    finally:
        instance.stop()
