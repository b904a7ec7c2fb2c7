"""One client connection: parse requests as they arrive, answer them in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

from mme.gateway.http import Headers, Request, Response, encode_response, error_response

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

MAX_HEADER_BYTES = 8 * 1024  # what MMS accepts (Netty's default header size)
MAX_QUEUED = 16  # requests parsed ahead of their answers before reading pauses
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientConnection(asyncio.Protocol):
    """Reads requests with httptools and answers each through ``handler``, one at a time."""

    def __init__(
        self, handler: Handler, max_body_bytes: int, tasks: set[asyncio.Task[None]]
    ) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._tasks = tasks
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # A Response in the queue is a refusal, answered in turn, after which the
        # connection closes; None means the client went away.
        self._queue: asyncio.Queue[Request | Response | None] = asyncio.Queue()
        self._paused = False
        self._refused = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        task = asyncio.get_running_loop().create_task(self._serve())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(HTTPStatus.BAD_REQUEST, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(None)

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._headers.append((name, value))
        self._count_header_bytes(len(name) + len(value))

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        length = _content_length(self._headers)
        if length is not None and length > self._max_body:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(self._max_body))
            return
        expect = next((v for k, v in self._headers if k.lower() == b"expect"), None)
        if expect is not None and expect.lower() == b"100-continue" and self._transport:
            self._transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(self._max_body))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        request = Request(
            self._parser.get_method().decode("latin-1"),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self._parser.should_keep_alive(),
        )
        self._reset_message()
        self._queue.put_nowait(request)
        if self._queue.qsize() >= MAX_QUEUED and self._transport and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    # the answers

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request's headers are larger than {MAX_HEADER_BYTES} bytes",
            )

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer ``status`` after what is queued, then close: the stream cannot be trusted."""
        if not self._refused:
            self._refused = True
            self._queue.put_nowait(error_response(int(status), message))
            if self._transport:
                self._transport.pause_reading()

    async def _serve(self) -> None:
        while (request := await self._queue.get()) is not None:
            if self._paused and self._queue.qsize() < MAX_QUEUED // 2 and self._transport:
                self._paused = False
                self._transport.resume_reading()
            if isinstance(request, Response):
                response, keep_alive = request, False
            elif request.method == "HEAD":  # MMS's answer to a GET, without its body
                response, keep_alive = await self._handler(request.as_get()), request.keep_alive
            else:
                response, keep_alive = await self._handler(request), request.keep_alive
            transport = self._transport
            if transport is None or transport.is_closing():
                return
            head = isinstance(request, Request) and request.method == "HEAD"
            transport.write(encode_response(response, keep_alive, head))
            if not keep_alive:
                transport.close()
                return


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB)"
