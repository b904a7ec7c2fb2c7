"""A forked child's lifeline: the connection of the process that MMS started for it.

MMS ends a worker by killing the process it started (the launcher's stand-in), which
closes that process's connection to the zygote. The zygote then ends the child, but a
zygote can die first (the kernel's OOM killer picks big processes; a new one replaces it),
so each child watches the connection itself: the kernel signals it (SIGIO) when the
connection closes. The file description is shared with the zygote's socket, which stays
blocking: only its owner (the child that watches) and the O_ASYNC flag change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
from typing import Any


def _watch(lifeline: int) -> None:
    """Have SIGIO come to this process when the lifeline's peer writes or hangs up (the
    stand-in never writes)."""
    fcntl.fcntl(lifeline, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(lifeline, fcntl.F_SETFL, fcntl.fcntl(lifeline, fcntl.F_GETFL) | os.O_ASYNC)
    if _closed(lifeline):  # closed before O_ASYNC was set: no signal will come for it
        os._exit(1)


def _closed(fd: int) -> bool:
    with socket.socket(fileno=os.dup(fd)) as sock:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def die_with(lifeline: int) -> None:
    """Have the kernel end this process (SIGIO's default action) once ``lifeline`` closes."""
    signal.signal(signal.SIGIO, signal.SIG_DFL)  # its default action ends the process
    _watch(lifeline)


def hang_up_with(lifeline: int, connections: set[int]) -> None:
    """Hang up on MMS once the stand-in's connection closes (MMS killed it, unloading the
    model), so that MMS's worker code ends this worker as it does when MMS hangs up: it
    unloads the model and removes its log pipes. A worker stuck in native code ends when
    the UNLOAD gives up waiting for it and kills it.

    ``connections`` holds the fds of MMS's connections that this worker serves: its own,
    and those it serves on threads (it may change until the signal comes)."""

    def on_sigio(_signo: int, _frame: Any) -> None:
        if _closed(lifeline):
            for fd in list(connections):
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as conn:
                    conn.shutdown(socket.SHUT_RDWR)

    signal.signal(signal.SIGIO, on_sigio)
    _watch(lifeline)
