"""A model's later workers, served on threads of the worker that loaded it.

MMS connects to a model's backend once per worker (``SAGEMAKER_MODEL_SERVER_WORKERS``),
and a process per connection would hold a copy of the model each. When the model's
workers share it (``MME_WORKERS_SHARE_MODEL``, the default), the zygote forks a worker
for the first connection only, and hands each later one to it through a feed (a unix
socket that carries file descriptors). The worker serves each such connection on a thread
of its own, with the model that its first connection loaded: a second worker costs a
thread and a copy of MMS's request context, not a second copy of the weights.

Threads compute at once: torch runs its operators without the GIL, and OpenMP's thread
count belongs to the thread that sets it, so each request still runs with the threads
that the gateway granted it (:mod:`mme.thread_share`).

To MMS each connection is a worker as before: it answers MMS's LOAD (with the first
connection's outcome, once that is known), opens the log pipes that MMS reads for it, and
answers MMS's requests with MMS's own service code.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import ctypes
import logging
import os
import socket
import threading
from typing import Any

from mme import worker_records
from mme.worker_config import WorkerConfig

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # <malloc.h>


class SharedModel:
    """The worker's MMS worker object, the outcome of its LOAD, and the connections it
    serves on threads."""

    def __init__(self, worker: Any, connections: set[int]) -> None:
        self._worker = worker
        self._connections = connections  # what the lifeline hangs up (mme.prefork.lifeline)
        self._loaded = threading.Event()
        self._outcome: tuple[str, int] | None = None  # None: the LOAD raised
        self._served = 0
        load = worker.load_model

        def load_and_tell(request: Any) -> tuple[str, int]:
            try:
                self._outcome = load(request)
                return self._outcome
            finally:
                self._loaded.set()

        worker.load_model = load_and_tell

    def serve_feed(self, feed: socket.socket) -> None:
        """Serve each connection that the zygote sends through ``feed``, from now on."""
        threading.Thread(target=self._receive, args=(feed,), daemon=True, name="feed").start()

    def _receive(self, feed: socket.socket) -> None:
        with feed:
            while True:
                try:
                    message, fds, _flags, _address = socket.recv_fds(feed, 1, 1)
                except OSError:
                    return
                if not message:
                    return  # the zygote is gone: the connections served so far go on
                for fd in fds:
                    if not self._served:
                        _one_heap()
                    self._served += 1
                    self._connections.add(fd)
                    threading.Thread(
                        target=self._serve,
                        args=(fd, self._served),
                        daemon=True,
                        name=f"connection-{self._served}",
                    ).start()

    def _serve(self, fd: int, number: int) -> None:
        """Serve MMS's connection ``fd`` as MMS's worker code serves one, until it closes."""
        from mms.protocol.otf_message_handler import retrieve_msg
        from mms.service import emit_metrics

        pipes: list[Any] = []
        conn = socket.socket(fileno=fd)
        conn.setblocking(True)
        try:
            service = None
            while True:
                command, message = retrieve_msg(conn)
                if command == b"I" and service is not None:
                    conn.sendall(service.predict(message))
                    emit_metrics(service.context.metrics.store)
                elif command == b"L":
                    service = self._answer_load(conn, message, number, pipes)
                else:
                    raise ValueError(f"unexpected command {command!r}")
        except Exception as exc:  # MMS hung up (an UNLOAD, fewer workers), or a broken message
            logger.info("connection %d of the model ends: %s", number, exc)
        finally:
            self._connections.discard(fd)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
            _close_pipes(pipes)

    def _answer_load(self, conn: socket.socket, request: Any, number: int, pipes: list[Any]) -> Any:
        """Answer MMS's LOAD on a later connection with the first one's outcome; the
        model's service for this connection."""
        from mms.protocol.otf_message_handler import create_load_model_response

        self._loaded.wait()
        if self._outcome is None:
            raise RuntimeError("the model's LOAD failed")  # MMS sees the connection close
        result, code = self._outcome
        model_name = request["modelName"].decode("utf-8")
        paths = self._make_pipes(request)
        if code == 200:
            result = f"loaded model {model_name}. [PID]:{os.getpid()}"
        conn.sendall(create_load_model_response(code, result))
        # MMS opens each pipe to read once it has the answer; opening blocks until it does.
        pipes.extend(open(path, "w", encoding="utf-8") for path in paths)  # noqa: SIM115
        if code != 200:
            raise RuntimeError(f"{code} - {result}")
        worker_records.record_connection(
            WorkerConfig.from_env().server_temp_dir, model_name, number
        )
        logger.info("model %s: worker %d served by this worker's thread", model_name, number)
        return _service_for_connection(self._worker.service)

    def _make_pipes(self, request: Any) -> list[str]:
        # As MMS's worker does: the frontend reads this worker's stdout and stderr from two
        # named pipes. The process's streams stay on the first worker's pipes.
        name = request.get("ioFileDescriptor")
        if name is None or not self._worker.tmp_dir:
            return []
        base = os.path.join(self._worker.tmp_dir, name.decode("utf-8"))
        paths = [f"{base}-stdout", f"{base}-stderr"]
        for path in paths:
            os.mkfifo(path)
        atexit.register(_remove, paths)  # the process may end first (the first worker ended)
        return paths


def _one_heap() -> None:
    """Have the threads that start from now on allocate from the heaps that exist.

    glibc gives each thread that allocates a heap (an arena) of its own, which keeps what
    the thread freed: each thread that serves a connection would keep a forward pass's
    activations of its own between requests. Measured with ResNet-18 (`make bench`,
    shared part), once both workers had computed: 1.30-1.39x one worker's private memory
    with a heap per thread, 1.05-1.16x with the heaps that exist.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)


def _service_for_connection(service: Any) -> Any:
    """A copy of MMS's service with a request context of its own: MMS's service keeps the
    current request in its context, and each connection serves its own requests."""
    own = copy.copy(service)
    own._context = copy.copy(service.context)  # MMS's Service has no setter for it
    return own


def _close_pipes(pipes: list[Any]) -> None:
    paths = [pipe.name for pipe in pipes]
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.close()
    _remove(paths)


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)
