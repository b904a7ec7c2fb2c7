"""The gateway's client of MMS: kept-alive connections to its private port, one request each."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from mme.gateway.http import Headers, Request, Response, encode_request

IDLE_CLOSE_S = 5.0


class UpstreamError(ConnectionError):
    """MMS could not be reached, or closed the connection before it answered."""


class _Connection(asyncio.Protocol):
    """One connection to MMS; answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reply: asyncio.Future[Response] | None = None
        self._reset()

    def _reset(self) -> None:
        self._reason = b""
        self._headers: Headers = []
        self._body: list[bytes] = []

    def send(self, data: bytes) -> asyncio.Future[Response]:
        """Write one request; the future holds MMS's whole answer."""
        assert self.transport is not None and self._reply is None
        self._reply = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"MMS sent a malformed answer: {exc}"))
            if self.transport:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(UpstreamError("MMS closed the connection before it answered"))

    def _fail(self, error: Exception) -> None:
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(error)

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = Response(
            self._parser.get_status_code(),
            self._headers,
            b"".join(self._body),
            self._reason,
            self._parser.should_keep_alive(),
        )
        self._reset()
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_result(response)


class Upstream:
    """A pool of kept-alive connections to MMS at ``host:port``.

    The pool grows to the most requests in flight at once; a connection idle for
    ``IDLE_CLOSE_S`` is closed, so that a burst leaves no sockets behind for good.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[_Connection] = []  # the most recently used last
        self._trimming: asyncio.TimerHandle | None = None

    async def send(self, request: Request) -> Response:
        """Send ``request`` to MMS and return its answer; UpstreamError if there is none.

        A request that meets a kept-alive connection which MMS closed meanwhile is sent
        once more on a new one: nothing of it can have been handled.
        """
        data = encode_request(request)
        connection = self._take_idle()
        if connection is not None:
            try:
                return await self._exchange(connection, data)
            except UpstreamError:
                pass  # MMS closed it while it was idle
        return await self._exchange(await self._connect(), data)

    def close(self) -> None:
        """Close the idle connections."""
        if self._trimming is not None:
            self._trimming.cancel()
            self._trimming = None
        for connection in self._idle:
            if connection.transport:
                connection.transport.close()
        self._idle.clear()

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if (
                not connection.lost
                and connection.transport
                and not connection.transport.is_closing()
            ):
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except OSError as exc:
            raise UpstreamError(f"cannot reach MMS on {self._host}:{self._port}: {exc}") from exc
        return connection

    async def _exchange(self, connection: _Connection, data: bytes) -> Response:
        response = await connection.send(data)
        if response.keep_alive and not connection.lost:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
            self._trim_later()
        elif connection.transport:
            connection.transport.close()
        return response

    def _trim_later(self) -> None:
        if self._trimming is None:
            self._trimming = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, self._trim)

    def _trim(self) -> None:
        self._trimming = None
        cutoff = asyncio.get_running_loop().time() - IDLE_CLOSE_S
        while self._idle and self._idle[0].idle_since <= cutoff:
            connection = self._idle.pop(0)
            if connection.transport:
                connection.transport.close()
        if self._idle:
            self._trim_later()
