"""MMS's per-model backend server, served by the zygote instead of by a process per model.

MMS starts a model's backend (``model_service_worker.py --sock-type unix --sock-name S``),
waits for it to print ``MMS worker started.``, then connects to ``S`` once per worker; the
stock backend accepts each connection and forks a process that serves it. Here the zygote
plays the backend for every model: it binds the model's socket, prints the lines that MMS
reads, and forks each connection's worker straight from the warm parent. A model then
costs the process that MMS started (the launcher's stand-in) and its worker, not a third
process that only accepts connections (4.4 MiB and a thread per model).

Why not let the forked backend serve its one connection itself: it would exit whenever its
worker did (a failed LOAD, a killed worker), and MMS 1.1.11 restarts an exited backend
even while the model is being unregistered (its server thread schedules the restart before
the unregister marks it scaled down), leaving backends behind for models that are gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MODEL_WORKER_SCRIPT = "model_service_worker.py"
LISTEN_BACKLOG = 128  # as MMS's backend


def is_model_worker(script: str) -> bool:
    """Whether ``script`` is MMS's backend (MMS also runs its metrics collector with the
    workers' Python)."""
    return os.path.basename(script) == MODEL_WORKER_SCRIPT


def option(argv: list[str], name: str) -> str | None:
    """The value that follows ``name`` in ``argv``, if any."""
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(name) + 1]
    return None


@dataclass
class Backend:
    """One model's backend: the socket MMS connects to, the stand-in's streams for the
    workers, and the workers forked so far."""

    request: dict[str, Any]
    std_fds: list[int]
    listener: socket.socket
    stand_in: socket.socket
    workers: set[int] = field(default_factory=set)
    # A worker's pid -> the zygote's end of its feed (mme.prefork.shared_connections): when
    # the model's workers share it, MMS's later connections go to a live worker through it.
    feeds: dict[int, socket.socket] = field(default_factory=dict)
    share: bool = False

    def hand_over(self, conn: socket.socket) -> bool:
        """Give MMS's connection ``conn`` to a live worker of the model; False when none
        takes it (the caller forks one)."""
        for pid, feed in reversed(list(self.feeds.items())):
            try:
                socket.send_fds(feed, [b"c"], [conn.fileno()])
                return True
            except OSError:  # the worker is gone (not yet reaped), or not reading
                self.drop_feed(pid)
        return False

    def drop_feed(self, pid: int) -> None:
        """Close the feed of worker ``pid`` (it ended), if it has one."""
        feed = self.feeds.pop(pid, None)
        if feed is not None:
            feed.close()

    def accept(self) -> socket.socket | None:
        """MMS's next connection; None when there is none after all."""
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:  # out of fds, say: that worker fails, MMS tries again
            logger.error("prefork: model backend %s cannot accept: %s", self.socket_path, exc)
            return None
        conn.setblocking(True)
        return conn

    @property
    def socket_path(self) -> str:
        """Where MMS connects."""
        return str(self.listener.getsockname())

    def close(self, unlink: bool) -> None:
        """Stop accepting and let the streams go; remove the socket's file when ``unlink``
        (MMS leaves it, and no backend started again for the model has bound the path)."""
        if unlink:
            with contextlib.suppress(OSError):
                os.remove(self.socket_path)
        self.listener.close()
        for pid in list(self.feeds):
            self.drop_feed(pid)
        for fd in self.std_fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def open_backend(
    request: dict[str, Any], fds: list[int], stand_in: socket.socket, stand_in_pid: int
) -> Backend | None:
    """Serve the backend that ``request`` starts, for the stand-in ``stand_in_pid``; None
    when the request is not MMS's backend on a unix socket, or its socket cannot be had
    (then the stock backend runs in a forked child and reports its own error).

    Takes over ``fds`` when it returns a backend.
    """
    argv: list[str] = request["argv"]
    path = option(argv, "--sock-name")
    if (
        not argv
        or not is_model_worker(argv[0])
        or option(argv, "--sock-type") != "unix"
        or not path
    ):
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # left by a backend before this one, as MMS's backend does
        listener.bind(path)
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
        _announce(fds[1], path, stand_in_pid)
    except OSError as exc:
        logger.warning(
            "prefork: cannot serve the backend on %s (%s); forking a stock one", path, exc
        )
        listener.close()
        return None
    return Backend(request, fds, listener, stand_in, share=bool(request.get("share")))


def _announce(stdout: int, path: str, pid: int) -> None:
    # What MMS's backend logs as it starts: MMS waits for "MMS worker started." and takes
    # the backend's pid from "[PID]": the stand-in's, the process that MMS started.
    lines = (
        f"Listening on port: {path}\n[PID] {pid}\nMMS worker started.\n"
        f"Python runtime: {platform.python_version()}\n"
    )
    os.write(stdout, lines.encode("utf-8"))
