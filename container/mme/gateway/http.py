"""HTTP/1.1 messages as the gateway handles them: whole, parsed by httptools, sent in one write.

Bodies are small (SageMaker caps them at a few MiB), so each message is read whole
before it is passed on; writing it back in one piece keeps a kept-alive client from
waiting on Nagle's algorithm and its own delayed ACK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

# Headers about one hop only: the gateway sets its own (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"content-length",
        b"host",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)

Headers = list[tuple[bytes, bytes]]


@dataclass
class Request:
    """One request from a client, with its whole body."""

    method: str
    target: str
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    keep_alive: bool = True

    @cached_property
    def path(self) -> str:
        """The percent-decoded path, without the query (the gateway and its metrics both
        route on it)."""
        return unquote(self.target.split("?", 1)[0])

    @property
    def query(self) -> dict[str, list[str]]:
        """The query parameters."""
        _, _, query = self.target.partition("?")
        return parse_qs(query)

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lowercase), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def as_get(self) -> Request:
        """This request as a GET (a HEAD's answer is a GET's without the body)."""
        return Request("GET", self.target, self.headers, self.body, self.keep_alive)

    def with_headers(self, extra: Headers) -> Request:
        """This request with ``extra`` headers added."""
        return Request(self.method, self.target, self.headers + extra, self.body, self.keep_alive)


@dataclass
class Response:
    """One response, with its whole body."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: bytes = b""
    keep_alive: bool = True

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header ``name`` (lowercase), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def error_response(status: int, message: str, kind: str = "") -> Response:
    """An error in the JSON shape MMS uses, so clients see one format whoever answered."""
    body = {
        "code": status,
        "type": kind or HTTPStatus(status).phrase.replace(" ", ""),
        "message": message,
    }
    return json_response(status, body)


def json_response(status: int, value: object) -> Response:
    """``value`` as a JSON answer."""
    return Response(
        status, [(b"Content-Type", b"application/json")], json.dumps(value).encode("utf-8")
    )


def _end_to_end(headers: Headers) -> list[bytes]:
    return [
        name + b": " + value + b"\r\n" for name, value in headers if name.lower() not in HOP_BY_HOP
    ]


def encode_request(request: Request) -> bytes:
    """``request`` as bytes for MMS, on a kept-alive connection."""
    head = [
        f"{request.method} {request.target} HTTP/1.1\r\n".encode("latin-1"),
        b"Host: mms\r\n",
        *_end_to_end(request.headers),
        b"Content-Length: %d\r\n\r\n" % len(request.body),
    ]
    return b"".join(head) + request.body


def encode_response(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    """``response`` as bytes for the client (``head``: the answer to a HEAD, without body)."""
    reason = response.reason or _phrase(response.status)
    lines = [
        b"HTTP/1.1 %d " % response.status + reason + b"\r\n",
        *_end_to_end(response.headers),
        b"Content-Length: %d\r\n" % len(response.body),
        b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n",
    ]
    return b"".join(lines) + (b"" if head else response.body)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"
