"""The endpoint's HTTP server: InvokeEndpoint, SDK local mode's ``/invocations``, ping, metrics.

Every outcome is decided in :meth:`EndpointApp.handle`; the request handler class only
moves bytes. Anything that is not an EndpointError is our bug: it is logged with its
stack trace and answered 500 InternalFailure.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mme.endpoint import wire
from mme.endpoint.container_api import Answer, ContainerClient, ContainerTimeoutError
from mme.endpoint.errors import EndpointError, ModelError, PayloadTooLargeError
from mme.endpoint.loader import LoadFailedError
from mme.endpoint.metrics import CallRecord, Metrics, elapsed_us
from mme.endpoint.registry import Lease, ModelRegistry
from mme.prometheus_text import CONTENT_TYPE as PROMETHEUS_TYPE
from mme.sagemaker_contract import MAX_INVOKE_BODY_BYTES

logger = logging.getLogger(__name__)

DISCARD_LIMIT_BYTES = 64 * 1024 * 1024  # read and drop an oversized body up to this much
DISCARD_CHUNK_BYTES = 1024 * 1024
WRITE_BUFFER_BYTES = 64 * 1024  # an answer up to this size goes out in one write


@dataclass(frozen=True)
class EndpointConfig:
    """The endpoint as CreateEndpoint would describe it."""

    endpoint_name: str
    variant_name: str = "AllTraffic"
    log_stream_arn: str = ""


def _discard(body: io.BufferedIOBase, length: int) -> bool:
    """Read and drop ``length`` bytes, so the client reads our answer; False if too many."""
    if length > DISCARD_LIMIT_BYTES:
        return False
    left = length
    while left > 0:
        chunk = body.read(min(DISCARD_CHUNK_BYTES, left))
        if not chunk:
            return False
        left -= len(chunk)
    return True


class EndpointApp:
    """Decides the answer to each request."""

    def __init__(
        self,
        config: EndpointConfig,
        registry: ModelRegistry,
        container: ContainerClient,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.registry = registry
        self.container = container
        self.metrics = metrics

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: io.BufferedIOBase
    ) -> wire.Response:
        """The answer to one request; ``headers`` has lower-case names, ``body`` the body."""
        request_id = str(uuid.uuid4())
        # The body is read (or dropped) first, whatever the answer: bytes left unread would
        # be taken for the next request on this keep-alive connection.
        payload, body_error = self._read_body(method, headers, body)
        try:
            route = wire.route(method, path)
            if route.action == "ping":
                return wire.text_response(200, "", "text/plain", request_id)
            if route.action == "metrics":
                return wire.text_response(
                    200, self.metrics.prometheus(), PROMETHEUS_TYPE, request_id
                )
        except EndpointError as error:
            response = wire.error_response(body_error or error, request_id)
            self.metrics.count_response(response.status)
            return response
        return self._invocation(route, headers, payload, body_error, request_id)

    @staticmethod
    def _read_body(
        method: str, headers: Mapping[str, str], body: io.BufferedIOBase
    ) -> tuple[bytes, EndpointError | None]:
        """The request's body, or the error (411, 413) that refuses it."""
        chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        content_length = headers.get("content-length")
        if content_length is None and not chunked and method in ("GET", "HEAD", "DELETE"):
            return b"", None
        try:
            length = wire.body_length(content_length, chunked)
        except EndpointError as error:
            return b"", error
        if length > MAX_INVOKE_BODY_BYTES:
            too_large = PayloadTooLargeError(
                f"HTTP content length exceeded {MAX_INVOKE_BODY_BYTES} bytes."
            )
            too_large.close_connection = not _discard(body, length)
            return b"", too_large
        return body.read(length), None

    def _invocation(
        self,
        route: wire.Route,
        headers: Mapping[str, str],
        payload: bytes,
        body_error: EndpointError | None,
        request_id: str,
    ) -> wire.Response:
        started = time.monotonic_ns()
        record = CallRecord(request_id)
        counted = False
        try:
            name = wire.check_endpoint(route.endpoint_name, self.config.endpoint_name)
            counted = True
            if body_error is not None:
                raise body_error
            record.target_model = wire.check_target_model(
                headers.get(wire.TARGET_MODEL_HEADER.lower()), request_id, name
            )
            response = self._invoke(record, payload, wire.forwarded_headers(headers), request_id)
        except EndpointError as error:
            response = wire.error_response(error, request_id)
        except Exception as exc:
            logger.exception("request %s failed: %s", request_id, exc)
            response = wire.error_response(
                EndpointError(f"Internal failure (request {request_id}); see the endpoint log."),
                request_id,
            )
        record.status = response.status
        record.total_us = elapsed_us(started)
        self.metrics.record_call(record, counted=counted)
        return response

    def _invoke(
        self, record: CallRecord, payload: bytes, forwarded: dict[str, str], request_id: str
    ) -> wire.Response:
        target_model = record.target_model
        assert target_model is not None
        try:
            answer = self.registry.serve(
                target_model, lambda lease: self._call_model(record, lease, payload, forwarded)
            )
        except LoadFailedError as failed:
            # A failed LOAD is the model's error too (Invocation4XX/5XXErrors).
            record.model_status = failed.status
            record.model_name = self.registry.model_id(target_model)
            raise ModelError(failed.status, failed.message, self.config.log_stream_arn) from failed
        if 200 <= answer.status < 300:
            return wire.success_response(
                answer.body,
                answer.headers.get("content-type"),
                self.config.variant_name,
                answer.headers.get(wire.CUSTOM_ATTRIBUTES_HEADER.lower()),
                request_id,
            )
        raise ModelError(answer.status, answer.message(), self.config.log_stream_arn)

    @staticmethod
    def _note_lease(record: CallRecord, lease: Lease) -> None:
        record.model_name = lease.model_id
        if record.cache_hit is None:
            record.cache_hit = lease.cache_hit
        record.wait_us = (record.wait_us or 0) + lease.wait_us
        record.download_us = lease.phases.download_us
        record.load_us = lease.phases.load_us
        record.unload_us = lease.phases.unload_us

    def _call_model(
        self, record: CallRecord, lease: Lease, payload: bytes, forwarded: dict[str, str]
    ) -> Answer:
        self._note_lease(record, lease)
        started = time.monotonic_ns()
        try:
            answer = self.container.invoke(lease.model_id, payload, forwarded)
        except ContainerTimeoutError as exc:
            record.model_status = 504
            raise ModelError(
                504,
                f"Your invocation timed out while waiting for a response from the "
                f"container ({exc}).",
                self.config.log_stream_arn,
            ) from exc
        finally:
            record.model_latency_us = elapsed_us(started)
        record.model_status = answer.status
        return answer


class EndpointHTTPServer(ThreadingHTTPServer):
    """A thread per connection, each answered by :class:`EndpointApp`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: EndpointApp | None = None) -> None:
        super().__init__(address, _RequestHandler)
        self.app = app  # set before serve_forever(); until then connections just queue


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    # Nagle's algorithm holds a small write back until the client acknowledges the one
    # before, and a kept-alive client delays that ACK by up to 40 ms: every call would wait.
    # So: no Nagle, and a write buffer, so that headers and body leave in one write (the
    # stdlib writes the headers on their own).
    disable_nagle_algorithm = True
    wbufsize = WRITE_BUFFER_BYTES
    server: EndpointHTTPServer

    def _answer(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        app = self.server.app
        assert app is not None, "serve_forever() before the app was set"
        response = app.handle(self.command, self.path, headers, self.rfile)
        try:
            self._send(response)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout passed); nothing is left to tell it.
            logger.debug("client went away before %s %s was answered", self.command, self.path)
            self.close_connection = True

    def _send(self, response: wire.Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if response.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        self.wfile.flush()

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>; every method goes to the app, which answers
        # an unknown one with a 404 botocore can parse instead of the stdlib's HTML 501.
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        # Each call already gets one line from the metrics; the stdlib access log is noise.
        logger.debug("%s - %s", self.address_string(), format % args)
