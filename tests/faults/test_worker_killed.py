"""A worker killed with SIGKILL in the middle of a request."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.polling import wait_until
from harness.processes import model_workers
from harness.servers import NativeServer
from tests.container.test_container_api import invoke
from tests.faults.conftest import loaded_model, running_server, sleeping

pytestmark = pytest.mark.server

# Far beyond the client's 120 s: only the kill itself can end the request in time.
RESPONSE_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """A server that would wait ten minutes for a worker's answer."""
    with running_server(tmp_path_factory.mktemp("models"), RESPONSE_TIMEOUT_S) as instance:
        yield instance


def pid_answering(server: NativeServer, name: str) -> int:
    answer = invoke(server, name, b"0", "text/plain")
    assert answer.status_code == 200, answer.text
    pid: int = answer.json()["pid"]
    return pid


def test_the_request_gets_an_error_the_model_serves_again_the_others_never_notice(
    server: NativeServer,
) -> None:
    victim = loaded_model(server, "victim")
    loaded_model(server, "bystander")
    bystander = pid_answering(server, "bystander")
    [worker] = model_workers(server.descendants(), "victim")
    assert pid_answering(server, "victim") == worker.pid  # the process tree finds the worker
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(invoke, server, "victim", b"3600", "text/plain")
        assert wait_until(lambda: worker.pid in sleeping([victim]), 60)
        assert pid_answering(server, "bystander") == bystander  # serves while victim is busy
        worker.send_signal(signal.SIGKILL)
        answer = pending.result()  # invoke's own timeout (120 s) fails a hang
    assert answer.status_code == 500
    assert answer.json()["message"] == "Worker died."
    replacement = pid_answering(server, "victim")
    assert replacement != worker.pid
    workers = model_workers(server.descendants(), "victim")
    assert [process.pid for process in workers] == [replacement]
    assert pid_answering(server, "bystander") == bystander  # the same worker, never restarted
