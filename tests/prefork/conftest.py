"""A real zygote (no MMS) for the launcher tests, and a real prefork `mme serve`."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mme.prefork.zygote_process import ZygoteProcess
from mme.worker_config import WorkerConfig
from tests.server_process import NativeServer

READY_WITHIN_S = 120


@pytest.fixture(scope="module")
def zygote() -> Iterator[ZygoteProcess]:
    """A zygote serving launchers from a private folder (short: it holds a unix socket)."""
    folder = tempfile.mkdtemp(prefix="mme-", dir="/tmp")
    process = ZygoteProcess(folder)
    process.start({**os.environ, **WorkerConfig(num_threads=2).to_env(), "OMP_NUM_THREADS": "2"})
    deadline = time.monotonic() + READY_WITHIN_S
    while not process.ready():
        assert time.monotonic() < deadline, "the zygote did not get ready"
        time.sleep(0.1)
    try:
        yield process
    finally:
        process.stop()
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """`mme serve` in prefork mode, with two threads per worker."""
    root = tmp_path_factory.mktemp("models")
    root.chmod(0o755)
    instance = NativeServer(root, env={"MME_WORKER_MODE": "prefork", "MME_NUM_THREADS": "2",
                                       "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "60"})
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def ready_log(server: NativeServer) -> None:
    """Wait until `mme serve` says it is ready (in prefork mode: the zygote is)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while "the model server is healthy on" not in server.log():
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.1)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder for a test's scripts."""
    return tmp_path
