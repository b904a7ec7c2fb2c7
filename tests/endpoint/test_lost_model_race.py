"""Two calls find at once that the container lost their model (seen in a soak run).

The first gets 404 and LOADs the model again; the second reaches MMS while that LOAD has
registered the model but its worker is not up, and MMS answers it 503 "No worker is
available". Both calls must still succeed. The timing is a matter of milliseconds with
the real MMS, so a stand-in answers as MMS 1.1.11 does, in the order of the soak's log.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.endpoint import Endpoint, base_env, fronting
from tests.http_threads import JSONHandler, LoopbackHTTPServer, serving

RACE_TIMEOUT_S = 20


class ForgetfulContainer(LoopbackHTTPServer):
    """MMS that serves a model until ``forget()``, then loses it as described above."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.lost = threading.Event()
        self.racers = threading.Barrier(2, timeout=RACE_TIMEOUT_S)
        self.loaded_again = threading.Event()
        self.loads = 0
        self.answers: list[int] = []

    def invoke_status(self) -> int:
        if not self.lost.is_set() or self.loaded_again.is_set():
            return 200
        if self.racers.wait() == 0:
            return 404
        assert self.loaded_again.wait(RACE_TIMEOUT_S)
        return 503


class _Handler(JSONHandler):
    server: ForgetfulContainer

    def do_GET(self) -> None:
        if self.path == "/ping":
            self.answer(200, {"status": "Healthy"})
        elif self.path.startswith("/models/"):
            self.answer(200, [{"modelName": self.path.split("/")[2], "workers": [{}]}])
        else:
            self.answer(200, {"models": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/models":
            self.server.loads += 1
            if self.server.lost.is_set():
                self.server.loaded_again.set()
            self.answer(200, {"status": "Model registered"})
            return
        status = self.server.invoke_status()
        self.server.answers.append(status)
        if status == 200:
            self.answer(200, {"answer": 42})
        elif status == 404:
            self.answer(
                404, {"code": 404, "type": "ModelNotFoundException", "message": "Model not found"}
            )
        else:
            self.answer(
                503,
                {
                    "code": 503,
                    "type": "ServiceUnavailableException",
                    "message": "No worker is available to serve request",
                },
            )

    def do_DELETE(self) -> None:
        self.answer(200, {"status": "Model unregistered"})


@pytest.fixture
def container() -> Iterator[ForgetfulContainer]:
    with serving(ForgetfulContainer()) as server:
        yield server


@pytest.fixture
def endpoint(
    tmp_path: Path, archives: dict[str, Path], container: ForgetfulContainer
) -> Iterator[Endpoint]:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.tar.gz").write_bytes(archives["a.tar.gz"].read_bytes())
    cache = tmp_path / "cache"
    server = Endpoint(
        "race",
        fronting(container.url, folder, cache),
        tmp_path / "endpoint.log",
    )
    server.start(base_env())
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def invoke(endpoint: Endpoint) -> Any:
    answer = endpoint.client(retries={"max_attempts": 1}).invoke_endpoint(
        EndpointName=endpoint.name,
        TargetModel="a.tar.gz",
        ContentType="application/json",
        Body=b"[[1.0]]",
    )
    return json.loads(answer["Body"].read())


def test_a_call_that_meets_the_reload_of_a_lost_model_waits_for_it(
    endpoint: Endpoint,
    container: ForgetfulContainer,
) -> None:
    assert invoke(endpoint) == {"answer": 42}
    container.lost.set()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: invoke(endpoint), range(2)))
    assert answers == [{"answer": 42}] * 2
    # The warm call, the race (404 and 503), and a retry for each of the two.
    assert sorted(container.answers) == [200, 200, 200, 404, 503]
    assert container.loads == 2  # loaded again once, by the call that got 404
