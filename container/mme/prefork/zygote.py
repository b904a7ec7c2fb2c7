"""The warm parent: imports the serving stack once, then forks a worker per launcher.

Run by `mme serve` as ``python -m mme.prefork.zygote <socket> --argv-room=...`` in
the server's process group, so that stopping the group stops it and every child.
One thread, one loop: accept a launcher, fork; reap children and tell each launcher
how its child ended; kill the child of a launcher that went away (MMS's UNLOAD
kills the launcher with SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from mme.prefork import protocol
from mme.prefork.child import become_worker
from mme.prefork.preload import preload

logger = logging.getLogger("mme.prefork.zygote")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
REQUEST_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 64


@dataclass
class Zygote:
    """The listening socket, the SIGCHLD wake-up pipe, and each child's launcher."""

    listener: socket.socket
    base_path: list[str]
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    launchers: dict[int, socket.socket] = field(default_factory=dict)  # child pid -> launcher
    wakeup: tuple[int, int] = (-1, -1)

    def run(self) -> None:
        """Serve launchers until the process is killed (with the server's process group)."""
        self.wakeup = os.pipe()
        os.set_blocking(self.wakeup[1], False)
        signal.set_wakeup_fd(self.wakeup[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that it wakes us
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wakeup[0], selectors.EVENT_READ, "reap")
        while True:
            for key, _events in self.selector.select():
                if key.data == "accept":
                    self._accept()
                elif key.data == "reap":
                    os.read(self.wakeup[0], 4096)
                    self._reap()
                else:
                    self._launcher_gone(key.data, key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:  # out of fds, say: that launcher fails, the zygote goes on
            logger.error("prefork: cannot accept a launcher: %s", exc)
            return
        conn.settimeout(REQUEST_TIMEOUT_S)
        try:
            request, fds = protocol.receive_request(conn)
        except (OSError, ValueError) as exc:  # ProtocolError and bad JSON are ValueErrors
            logger.error("prefork: bad request from a launcher: %s", exc)
            conn.close()
            return
        try:
            pid = self._fork(request, fds, conn)
        except OSError as exc:
            logger.error("prefork: cannot fork a worker: %s", exc)
            conn.close()  # the launcher sees the zygote go and fails the worker's start
            return
        finally:
            for fd in fds:
                os.close(fd)
        conn.settimeout(None)
        self.launchers[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        protocol.send_reply(conn, {"pid": pid})

    def _fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write the zygote's buffered output again
        pid = os.fork()
        if pid == 0:
            become_worker(request, fds, self._own_fds(conn), self.base_path, conn.fileno())
        return pid

    def _own_fds(self, conn: socket.socket) -> list[int]:
        fds = [self.listener.fileno(), conn.fileno(), *self.wakeup]
        fds += [launcher.fileno() for launcher in self.launchers.values()]
        selector_fd = getattr(self.selector, "fileno", None)
        return fds + ([selector_fd()] if selector_fd else [])

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            launcher = self.launchers.pop(pid, None)
            if launcher is None:
                continue  # an orphaned grandchild, reaped as subreaper; nobody waits for it
            if os.WIFSIGNALED(status):
                protocol.send_reply(launcher, {"signal": os.WTERMSIG(status)})
            else:
                protocol.send_reply(launcher, {"exit": os.waitstatus_to_exitcode(status)})
            self._forget(launcher)

    def _launcher_gone(self, pid: int, launcher: socket.socket) -> None:
        # Readable means closed: a launcher never sends after its request.
        with contextlib.suppress(OSError):
            if launcher.recv(1):
                return
        self._forget(launcher)
        if self.launchers.pop(pid, None) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # MMS killed the launcher: the worker goes too

    def _forget(self, launcher: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(launcher)
        launcher.close()


def _become_subreaper() -> None:
    # A worker's own children (MMS forks one per connection) outlive it when it is
    # killed; as their subreaper the zygote reaps them instead of leaving zombies to init.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _base_path() -> list[str]:
    # sys.path is [our cwd, *PYTHONPATH entries, *interpreter paths]; a child rebuilds the
    # first two from its own request, and keeps the rest.
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return sys.path[1 + len(own):]


def _listen(path: str) -> socket.socket:
    # Bound under a temporary name, renamed once listening: the path appears only when
    # the zygote is ready, which is what launchers and `mme serve` wait for.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    listener.listen(LISTEN_BACKLOG)
    os.rename(staging, path)
    return listener


def main(argv: list[str] | None = None) -> int:
    """Import the serving stack, then serve launchers on the socket named in ``argv``."""
    parser = argparse.ArgumentParser(prog="python -m mme.prefork.zygote")
    parser.add_argument("socket")
    parser.add_argument("--argv-room", default="", help="spare room for workers' command lines")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s [%(levelname)s] %(name)s - %(message)s")
    base_path = _base_path()
    seconds = preload()
    _become_subreaper()
    # Said before the socket appears: `mme serve` reports itself ready once it has.
    logger.info("prefork: the warm parent (pid %d) imported the serving stack in %.1f s",
                os.getpid(), seconds)
    Zygote(_listen(args.socket), base_path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
