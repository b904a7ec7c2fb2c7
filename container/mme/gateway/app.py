"""The gateway's routes, and the thread of `mme serve` that runs its event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from http import HTTPStatus
from typing import TYPE_CHECKING

from mme.gateway.connection import ClientConnection
from mme.gateway.http import Request, Response, error_response
from mme.gateway.management import Management
from mme.gateway.scheduler import QueueFull, Scheduler
from mme.gateway.upstream import Upstream, UpstreamError
from mme.worker_headers import ORIGINAL_CONTENT_TYPE

if TYPE_CHECKING:  # mme.gateway.metrics imports this module
    from mme.gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024  # SageMaker wants a connection accepted within 250 ms
STOP_TIMEOUT_S = 5.0
LIST_ATTEMPTS = 3
LIST_RETRY_S = 0.01
FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


def model_of(path: str, suffix: str = "") -> str | None:
    """The model name in ``/models/<name><suffix>``, or None for any other path."""
    if not path.startswith("/models/") or not path.endswith(suffix):
        return None
    name = path[len("/models/") : len(path) - len(suffix)]
    return name if name and "/" not in name else None


def as_raw_body(request: Request) -> Request:
    """``request``, with a form content type hidden from MMS.

    MMS decodes form and multipart bodies into parameters, so that the model got no body
    at all; MMS gets them as octet streams, and the worker puts the type back.
    """
    content_type = request.header(b"content-type") or b""
    if content_type.split(b";")[0].strip().lower() not in FORM_TYPES:
        return request
    headers = [(k, v) for k, v in request.headers if k.lower() != b"content-type"]
    return Request(
        request.method,
        request.target,
        [
            *headers,
            (b"Content-Type", b"application/octet-stream"),
            (ORIGINAL_CONTENT_TYPE.encode(), content_type),
        ],
        request.body,
        request.keep_alive,
    )


class Gateway:
    """Answers every request on the server's port, mostly by passing it to MMS."""

    def __init__(
        self,
        upstream: Upstream,
        management: Management,
        scheduler: Scheduler,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._upstream = upstream
        self._management = management
        self.scheduler = scheduler
        self.metrics = metrics  # None: nothing measured, no metrics path (MME_METRICS=off)
        self.ready = False
        self.in_flight = 0  # requests being answered, /ping aside

    async def handle(self, request: Request) -> Response:
        """Answer ``request``; never raises."""
        if self.metrics is not None:  # metrics hook: it measures and answers its own path
            return await self.metrics.measure(request, self._answer)
        return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        if not self.ready:
            return error_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "the model server is starting",
                "ServiceUnavailableException",
            )
        counted = request.path != "/ping"
        self.in_flight += counted
        try:
            return await self._route(request)
        except QueueFull as exc:
            return error_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"No worker is available to serve request for model: {exc}. "
                "Consider increasing job queue size.",
                "ServiceUnavailableException",
            )
        except UpstreamError as exc:
            logger.error("%s", exc)
            return error_response(HTTPStatus.BAD_GATEWAY, str(exc), "BadGatewayException")
        except Exception:
            logger.exception("the gateway failed to answer %s %s", request.method, request.target)
            return error_response(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "the model server failed to answer; see its log",
                "InternalServerException",
            )
        finally:
            self.in_flight -= counted

    async def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method == "POST" and path == "/models":
            return await self._management.load(request)
        if method == "POST" and (name := model_of(path, "/invoke")):
            return await self.scheduler.run(name, as_raw_body(request))
        if method == "DELETE" and (name := model_of(path)) is not None:
            return await self._management.unload(request, name)
        if method == "GET" and path == "/models":
            return await self._list(request)
        return await self._upstream.send(request)

    async def _list(self, request: Request) -> Response:
        # MMS 1.1.11 builds the list while models come and go, and answers 500 (a
        # NullPointerException) when one is unregistered meanwhile; a LIST changes nothing,
        # so it is asked again.
        for _ in range(LIST_ATTEMPTS - 1):
            answer = await self._upstream.send(request)
            if answer.status != HTTPStatus.INTERNAL_SERVER_ERROR:
                return answer
            await asyncio.sleep(LIST_RETRY_S)
        return await self._upstream.send(request)


class GatewayThread:
    """The gateway's event loop, on its own thread of `mme serve`."""

    def __init__(self, gateway: Gateway, upstream: Upstream, max_body_bytes: int) -> None:
        self.gateway = gateway
        self._upstream = upstream
        self._max_body = max_body_bytes
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)

    def listen(self, host: str, port: int) -> None:
        """Bind ``host:port`` and start serving; OSError if the port cannot be had."""
        self._server = self._loop.run_until_complete(
            self._loop.create_server(
                lambda: ClientConnection(self.gateway.handle, self._max_body, self._tasks),
                host,
                port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
            )
        )
        self._thread.start()

    def set_ready(self) -> None:
        """From now on, pass requests to MMS (before, they get 503)."""
        self._loop.call_soon_threadsafe(setattr, self.gateway, "ready", True)

    def stop(self) -> None:
        """Stop listening, drop the connections, and end the thread."""
        if not self._thread.is_alive():
            self._loop.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop)
        try:
            future.result(STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
            self._loop.close()

    async def _shut_down(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        self.gateway.scheduler.close()
        self._upstream.close()
