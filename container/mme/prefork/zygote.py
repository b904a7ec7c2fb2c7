"""The warm parent: imports the serving stack once, then forks workers for launchers.

Run by `mme serve` as ``python -m mme.prefork.zygote <socket> --argv-room=...`` in
the server's process group, so that stopping the group stops it and every child.
One thread, one loop:

* accept a launcher; when it starts MMS's backend for a model, serve that backend
  (:mod:`mme.prefork.backend`) and fork a worker for each connection MMS makes to it;
  when it runs anything else (MMS's metrics collector), fork a child that runs it;
* reap children, and tell each launcher how its child ended;
* end what a launcher stood for once it went away (MMS's UNLOAD kills it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import logging
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from mme.prefork import protocol
from mme.prefork.backend import Backend, open_backend
from mme.prefork.child import become_worker, prepare, serve_connection
from mme.prefork.preload import preload

logger = logging.getLogger("mme.prefork.zygote")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
REQUEST_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 64
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class Launcher:
    """A launcher's connection (its stand-in's, after the exec), and what it stands for:
    a forked child that runs its program, or MMS's backend of one model."""

    conn: socket.socket
    child: int = 0
    backend: Backend | None = None


@dataclass
class Zygote:
    """The listening socket, the SIGCHLD wake-up pipe, the launchers and their children."""

    listener: socket.socket
    base_path: list[str]
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    children: dict[int, Launcher] = field(default_factory=dict)  # a program's pid -> launcher
    workers: dict[int, Backend] = field(default_factory=dict)  # a worker's pid -> its backend
    sockets: dict[str, Backend] = field(default_factory=dict)  # a backend's socket -> backend
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
                elif isinstance(key.data, Backend):
                    self._serve(key.data)
                else:
                    self._launcher_gone(key.data)

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
        conn.settimeout(None)
        prepare(request)
        launcher = Launcher(conn)
        launcher.backend = open_backend(request, fds, conn, _peer_pid(conn))
        if launcher.backend is None:
            try:
                launcher.child = self._fork(
                    lambda: become_worker(request, fds, self.base_path, conn.fileno())
                )
            except OSError as exc:
                logger.error("prefork: cannot fork a worker: %s", exc)
                conn.close()  # the launcher sees the zygote go and fails the worker's start
                return
            finally:
                for fd in fds:
                    os.close(fd)
            self.children[launcher.child] = launcher
        else:
            self.sockets[launcher.backend.socket_path] = launcher.backend
            self.selector.register(
                launcher.backend.listener, selectors.EVENT_READ, launcher.backend
            )
        self.selector.register(conn, selectors.EVENT_READ, launcher)
        protocol.send_reply(conn, protocol.PID_REPLY, launcher.child)

    def _serve(self, backend: Backend) -> None:
        """Give MMS's next connection to ``backend`` to the model's live worker, when its
        workers share it, or to a worker forked for it."""
        conn = backend.accept()
        if conn is None:
            return
        if backend.share and backend.hand_over(conn):
            conn.close()
            return
        feed, worker_end = socket.socketpair() if backend.share else (None, None)
        try:
            pid = self._fork(
                lambda: serve_connection(
                    backend.request,
                    backend.std_fds,
                    self.base_path,
                    backend.stand_in.fileno(),
                    conn.detach(),
                    worker_end.detach() if worker_end is not None else -1,
                )
            )
        except OSError as exc:
            logger.error("prefork: cannot fork a worker: %s", exc)
            if feed is not None:
                feed.close()
            return  # MMS sees its connection close and tries again
        finally:
            conn.close()
            if worker_end is not None:
                worker_end.close()
        backend.workers.add(pid)
        self.workers[pid] = backend
        if feed is not None:
            feed.setblocking(False)  # a worker that stopped reading never stalls the zygote
            backend.feeds[pid] = feed

    def _fork(self, become: Callable[[], NoReturn]) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would write the zygote's buffered output again
        pid = os.fork()
        if pid == 0:
            become()
        return pid

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            backend = self.workers.pop(pid, None)
            if backend is not None:
                _worker_ended(backend, pid)
                continue
            launcher = self.children.pop(pid, None)
            if launcher is None:
                continue  # an orphaned grandchild, reaped as subreaper; nobody waits for it
            if os.WIFSIGNALED(status):
                protocol.send_reply(launcher.conn, protocol.SIGNAL_REPLY, os.WTERMSIG(status))
            else:
                protocol.send_reply(
                    launcher.conn, protocol.EXIT_REPLY, os.waitstatus_to_exitcode(status)
                )
            self._forget(launcher)

    def _launcher_gone(self, launcher: Launcher) -> None:
        # Readable means closed: a stand-in never sends.
        with contextlib.suppress(OSError):
            if launcher.conn.recv(1):
                return
        self._forget(launcher)
        if self.children.pop(launcher.child, None) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(launcher.child, signal.SIGKILL)  # MMS killed the launcher

    def _forget(self, launcher: Launcher) -> None:
        backend = launcher.backend
        if backend is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(backend.listener)
            # MMS starts a model's backend again on the same socket when the last one exited:
            # the file is the new one's then.
            path = backend.socket_path
            ours = self.sockets.get(path) is backend
            if ours:
                del self.sockets[path]
            backend.close(unlink=ours)
            for pid in backend.workers:
                # As when their own lifeline signals them: each hangs up on MMS, which ends it
                # the way MMS's own worker ends (see mme.prefork.child).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGIO)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(launcher.conn)
        launcher.conn.close()


def _worker_ended(backend: Backend, pid: int) -> None:
    """Hand the stand-in's lifeline to a worker of the model that is still alive."""
    backend.workers.discard(pid)
    backend.drop_feed(pid)
    if backend.stand_in.fileno() < 0:
        return  # the backend is closed
    # The lifeline signals one process (the connection's owner): the last worker forked
    # took it; when that one ends, another worker of the model (or nobody) takes it back.
    with contextlib.suppress(OSError):
        if fcntl.fcntl(backend.stand_in, fcntl.F_GETOWN) == pid:
            fcntl.fcntl(backend.stand_in, fcntl.F_SETOWN, max(backend.workers, default=0))


def _peer_pid(conn: socket.socket) -> int:
    """The pid of the process at the other end of ``conn`` (the launcher, soon its stand-in)."""
    pid, _uid, _gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return int(pid)


def _become_subreaper() -> None:
    # A worker's own children outlive it when it is killed; as their subreaper the zygote
    # reaps them instead of leaving zombies to init.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _base_path() -> list[str]:
    # sys.path is [our cwd, *PYTHONPATH entries, *interpreter paths]; a child rebuilds the
    # first two from its own request, and keeps the rest.
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return sys.path[1 + len(own) :]


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
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s [%(levelname)s] %(name)s - %(message)s",
    )
    base_path = _base_path()
    seconds = preload()
    _become_subreaper()
    # Said before the socket appears: `mme serve` reports itself ready once it has.
    logger.info(
        "prefork: the warm parent (pid %d) imported the serving stack in %.1f s",
        os.getpid(),
        seconds,
    )
    Zygote(_listen(args.socket), base_path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
