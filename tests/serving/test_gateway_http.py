"""HTTP at the gateway, byte by byte: what clients send and what they must get back."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httptools
import pytest

from harness.models import make_model_dir
from harness.servers import NativeServer
from tests.container.test_container_api import load

pytestmark = pytest.mark.server

ECHO = """
    def model_fn(model_dir):
        return None
    def transform_fn(model, data, content_type, accept):
        return data, "application/octet-stream"
"""
PAYLOAD_MB = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    root = tmp_path_factory.mktemp("models")
    make_model_dir(root, "echo", {"inference.py": ECHO}, weights=False)
    instance = NativeServer(root, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(PAYLOAD_MB)}).start()
    try:
        assert load(instance, "echo").status_code == 200
        yield instance
    finally:
        instance.stop()


class Answers:
    """Parses the answers that arrive on one connection, in order."""

    def __init__(self) -> None:
        self.parsed: list[tuple[int, bytes]] = []
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.parsed.append((self._parser.get_status_code(), self._body))
        self._body = b""


def exchange(server: NativeServer, raw: bytes, answers: int, timeout_s: float = 30) -> Answers:
    """Send ``raw`` on one connection; read until ``answers`` answers have come."""
    parsed = Answers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        while len(parsed.parsed) < answers:
            data = sock.recv(65536)
            if not data:
                break
            parsed.feed(data)
    return parsed


def invoke_bytes(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /models/echo/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_pipelined_requests_are_answered_in_order(server: NativeServer) -> None:
    raw = b"".join(invoke_bytes(b"request %d" % i) for i in range(5))
    answers = exchange(server, raw, 5)
    assert answers.parsed == [(200, b"request %d" % i) for i in range(5)]


def test_expect_100_continue_gets_its_interim_answer(server: NativeServer) -> None:
    body = b"y" * 5000  # curl asks before it sends a body over 1 KiB
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = invoke_bytes(b"", b"Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)
        )
        sock.sendall(head)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answers = Answers()
        while not answers.parsed:
            answers.feed(sock.recv(65536))
    assert answers.parsed == [(200, body)]


def test_head_gets_the_headers_of_a_get_and_no_body(server: NativeServer) -> None:
    raw = b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n" + invoke_bytes(b"after")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        while b"after" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 200")  # no body between the HEAD's answer and the next


def test_a_body_over_the_limit_is_413_without_reading_it(server: NativeServer) -> None:
    size = PAYLOAD_MB * 1024 * 1024 + 1
    head = (
        b"POST /models/echo/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % size
    )
    answers = exchange(server, head, 1)
    assert answers.parsed[0][0] == 413


def test_headers_over_8_kib_are_431(server: NativeServer) -> None:
    answers = exchange(server, invoke_bytes(b"x", b"X-Big: " + b"v" * 9000 + b"\r\n"), 1)
    assert answers.parsed[0][0] == 431


def test_a_malformed_request_is_400(server: NativeServer) -> None:
    answers = exchange(server, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert answers.parsed[0][0] == 400


def test_connection_close_is_honoured(server: NativeServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(invoke_bytes(b"bye", b"Connection: close\r\n"))
        received = b""
        while chunk := sock.recv(65536):  # ends: the gateway closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"bye")


def test_many_requests_share_one_kept_alive_connection(server: NativeServer) -> None:
    answers = exchange(server, b"".join(invoke_bytes(b"%d" % i) for i in range(50)), 50)
    assert [body for _, body in answers.parsed] == [b"%d" % i for i in range(50)]
