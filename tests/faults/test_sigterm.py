"""SIGTERM to `mme serve` while requests are in flight."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.polling import wait_until
from harness.processes import running_for
from tests.container.test_container_api import invoke
from tests.faults.conftest import loaded_model, running_server, sleeping

pytestmark = pytest.mark.server

REQUEST_S = b"3"


def test_requests_in_flight_finish_and_nothing_is_left_running(models_root: Path) -> None:
    with running_server(models_root, 60) as server:
        model_dirs = [loaded_model(server, name) for name in ("first", "second")]
        with ThreadPoolExecutor(max_workers=3) as pool:
            # two for "first" (one waits in MMS's queue) and one for "second"
            pending = [
                pool.submit(invoke, server, name, REQUEST_S, "text/plain")
                for name in ("first", "first", "second")
            ]
            assert wait_until(lambda: len(sleeping(model_dirs)) == 2, 60)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            answers = [request.result() for request in pending]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert all("pid" in answer.json() for answer in answers)
        assert server.process.wait(timeout=60) == 0
    assert [process.pid for d in model_dirs for process in running_for(d)] == []
