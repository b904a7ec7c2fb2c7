"""A model_fn or a request that never returns: the client gets an error in bounded time,
the stuck worker ends, and the server stays healthy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from harness.models import make_model_dir
from harness.polling import wait_until
from harness.processes import alive, model_workers, running_for
from harness.servers import NativeServer
from tests.container.test_container_api import TIMEOUT, invoke, listed, load
from tests.faults.conftest import loaded_model, running_server

pytestmark = pytest.mark.server

RESPONSE_TIMEOUT_S = 20  # a LOAD imports torch: slow on a busy machine, so not tighter
# MMS gives up after the timeout; the worker ends itself a grace period later.
WORKER_GONE_WITHIN_S = 60
HANGS_IN_MODEL_FN = "import time\ndef model_fn(model_dir):\n    time.sleep(3600)\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    """A server that gives each worker 20 s to answer."""
    with running_server(tmp_path_factory.mktemp("models"), RESPONSE_TIMEOUT_S) as instance:
        yield instance


def healthy(server: NativeServer) -> bool:
    answer = requests.get(f"{server.url}/ping", timeout=TIMEOUT)
    return answer.status_code == 200 and answer.json()["status"] == "Healthy"


def test_a_model_fn_that_hangs_fails_the_load_and_leaves_no_process(
    server: NativeServer,
) -> None:
    loaded_model(server, "calm")
    stuck = make_model_dir(
        server.models_root, "stuck", {"inference.py": HANGS_IN_MODEL_FN}, weights=False
    )
    answer = load(server, "stuck")  # the client waits up to 120 s; MMS gives up at 20
    assert answer.status_code == 500
    assert "stuck" not in listed(server)
    # MMS 1.1.11 alone leaves this worker running forever, outside the server's tree:
    # the gateway ends it before it answers.
    assert running_for(stuck) == []
    # MMS says why; the worker's own farewell is lost, as MMS closed its output pipe.
    assert "Backend worker did not respond in given time" in server.log()
    assert healthy(server)
    assert invoke(server, "calm", b"0", "text/plain").status_code == 200
    loaded_model(server, "stuck", "def model_fn(model_dir):\n    return 1\n")  # reloadable


def test_a_request_that_hangs_gets_an_error_and_its_worker_is_replaced(
    server: NativeServer,
) -> None:
    loaded_model(server, "slow")
    [worker] = model_workers(server.descendants(), "slow")
    answer = invoke(server, "slow", b"3600", "text/plain")
    assert answer.status_code == 500
    assert answer.json()["message"] == "Worker died."
    again = invoke(server, "slow", b"0", "text/plain")
    assert again.status_code == 200
    assert again.json()["pid"] != worker.pid

    # MMS 1.1.11 alone leaves the stuck worker running until its request returns.
    assert wait_until(lambda: not alive(worker), WORKER_GONE_WITHIN_S)
    assert f"a request to model slow did not finish within {RESPONSE_TIMEOUT_S} s" in server.log()
    workers = model_workers(server.descendants(), "slow")
    assert [process.pid for process in workers] == [again.json()["pid"]]
    assert healthy(server)
