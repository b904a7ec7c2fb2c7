"""What MMS runs as ``<python>``: asks the zygote for a forked worker and stands in for it.

MMS starts, watches and kills this process as if it were the worker: so it passes its
standard streams to the zygote, relays the signals it gets to the child, ends with the
child's exit status (dying of the same signal when the child did), and its death by
SIGKILL (MMS's UNLOAD) closes its connection, on which the zygote kills the child.

It must start in milliseconds: it runs as ``python -I -S`` and imports only the
standard library and :mod:`mme.prefork.protocol`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

from mme.prefork import protocol

RELAYED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2)
ZYGOTE_WAIT_S = 120.0  # as long as MMS waits for a worker to start
CONNECT_POLL_S = 0.05
LOST_ZYGOTE_EXIT_CODE = 70  # EX_SOFTWARE: the zygote went away while the child ran
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_SCRIPT = """#!{python} -IS
# Written by `mme serve` (mme.prefork.launcher): MMS runs this as its Python for workers.
import sys
sys.path.insert(0, {package_root!r})
from mme.prefork.launcher import main
sys.exit(main({socket_path!r}, {python!r}))
"""


def write_launcher(path: str, socket_path: str) -> str:
    """Write the launcher executable that MMS gets as ``--python``; return its path."""
    import mme  # only here, in `mme serve`: the launcher itself never needs it

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(mme.__file__)))
    with open(path, "w", encoding="utf-8") as out:
        out.write(_SCRIPT.format(python=sys.executable, package_root=package_root,
                                 socket_path=socket_path))
    os.chmod(path, 0o755)
    return path


def main(socket_path: str, python: str) -> int:
    """Run one worker through the zygote at ``socket_path``; fall back to ``python``."""
    started = time.time()
    _die_with_mms()
    sock = _connect(socket_path)
    if sock is None:
        _run_stock_worker(python, "the prefork zygote is not running")
    request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
               "started": started}
    protocol.send_request(sock, request, protocol.STD_FDS)
    return _stand_in(sock)


def _die_with_mms() -> None:
    # If MMS is killed outright, this process is killed too, and with it the worker (which
    # watches its launcher's connection): nothing of the server outlives it.
    import ctypes  # here: it costs a millisecond, which only this process pays

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _connect(socket_path: str) -> socket.socket | None:
    deadline = time.monotonic() + ZYGOTE_WAIT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return sock
        except FileNotFoundError:
            sock.close()  # the zygote is still importing: it binds only when ready
            if time.monotonic() > deadline:
                return None
            time.sleep(CONNECT_POLL_S)
        except OSError:
            sock.close()  # refused: the zygote died
            return None


def _run_stock_worker(python: str, why: str) -> NoReturn:
    sys.stderr.write(f"mme prefork: {why}; starting a stock worker instead\n")
    sys.stderr.flush()
    os.execv(python, [python, *sys.argv[1:]])


class _Relay:
    """Forwards signals to the child once its pid is known (and remembers the last one)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.last: int | None = None

    def on_signal(self, signo: int, _frame: Any) -> None:
        self.last = signo
        if self.pid is None:
            self.pending.append(signo)
        else:
            self._send(signo)

    def set_pid(self, pid: int) -> None:
        self.pid = pid
        for signo in self.pending:
            self._send(signo)
        self.pending.clear()

    def _send(self, signo: int) -> None:
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signo)


def _stand_in(sock: socket.socket) -> int:
    relay = _Relay()
    for signo in RELAYED_SIGNALS:
        signal.signal(signo, relay.on_signal)
    with sock.makefile("rb") as replies:
        for line in replies:
            reply = json.loads(line)
            if "pid" in reply:
                relay.set_pid(int(reply["pid"]))
            elif "exit" in reply:
                return int(reply["exit"])
            elif "signal" in reply:
                _die_of(int(reply["signal"]))
    # The zygote is gone. It may have died alone (a new one replaces it): go on standing in
    # for the child, which still serves, until it ends; its exit status is the zygote's to
    # know, so end as the child most likely did.
    if relay.pid is not None:
        sys.stderr.write(f"mme prefork: lost the zygote; worker {relay.pid} goes on\n")
        sys.stderr.flush()
        _wait_for_end(relay.pid)
    if relay.last is not None:
        _die_of(relay.last)
    sys.stderr.write("mme prefork: the worker ended after its zygote\n")
    return LOST_ZYGOTE_EXIT_CODE


def _wait_for_end(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [])  # readable once the process has ended
    finally:
        os.close(pidfd)


def _die_of(signo: int) -> NoReturn:
    # So that MMS reads the same exit value as for a worker killed by signo (137 for -9).
    with contextlib.suppress(OSError, ValueError):  # SIGKILL's disposition cannot be set
        signal.signal(signo, signal.SIG_DFL)
    os.kill(os.getpid(), signo)
    os._exit(128 + signo)
