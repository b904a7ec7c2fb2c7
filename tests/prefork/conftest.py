"""A real zygote (no MMS) for the launcher tests, and a real prefork `mme serve`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.polling import wait_until
from harness.servers import READY_LINE, NativeServer, wait_for_log
from mme.prefork.zygote_process import ZygoteProcess
from mme.worker_config import WorkerConfig

READY_WITHIN_S = 120


@pytest.fixture(scope="module")
def zygote() -> Iterator[ZygoteProcess]:
    """A zygote serving launchers from a private folder (short: it holds a unix socket)."""
    folder = tempfile.mkdtemp(prefix="mme-", dir="/tmp")
    process = ZygoteProcess(folder)
    process.start({**os.environ, **WorkerConfig(num_threads=2).to_env(), "OMP_NUM_THREADS": "2"})
    ready = wait_until(process.ready, READY_WITHIN_S, interval_s=0.1)
    assert ready, "the zygote did not get ready"
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
    instance = NativeServer(
        root,
        env={
            "MME_WORKER_MODE": "prefork",
            "MME_NUM_THREADS": "2",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "60",
        },
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def ready_log(server: NativeServer) -> None:
    """Wait until `mme serve` says it is ready (in prefork mode: the zygote is)."""
    assert wait_for_log(server, READY_LINE, READY_WITHIN_S), "the server never became ready"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder for a test's scripts."""
    return tmp_path
