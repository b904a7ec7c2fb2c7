"""The launcher-zygote wire format: one request with the launcher's standard fds, then replies.

Only the standard library, because the launcher imports this module.

* launcher -> zygote: a 4-byte big-endian length, sent with fds 0, 1 and 2 attached
  (SCM_RIGHTS), then that many bytes of JSON: ``argv``, ``cwd``, ``env``, ``started``.
* zygote -> launcher: text lines, because after the first one a POSIX shell reads them
  (:mod:`mme.prefork.launcher`): ``pid N`` once the child runs (``pid 0`` when the zygote
  serves MMS's backend itself, see :mod:`mme.prefork.backend`), then ``exit CODE`` or
  ``signal SIGNO`` when it ends.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
from typing import Any

STD_FDS = (0, 1, 2)
PID_REPLY, EXIT_REPLY, SIGNAL_REPLY = "pid", "exit", "signal"
_LENGTH = struct.Struct(">I")
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # an environment is a few KiB; anything huge is a bug


class ProtocolError(ValueError):
    """The peer sent something that is not a request or reply of this protocol."""


def send_request(sock: socket.socket, request: dict[str, Any], fds: tuple[int, ...]) -> None:
    """Send ``request`` with ``fds`` attached to its first bytes."""
    body = json.dumps(request).encode("utf-8")
    fd_array = array.array("i", fds)
    sock.sendmsg([_LENGTH.pack(len(body))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd_array)])
    sock.sendall(body)


def receive_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive a request and the fds that came with it (the caller owns and closes them)."""
    fd_size = array.array("i").itemsize * len(STD_FDS)
    header, ancillary, _flags, _addr = sock.recvmsg(_LENGTH.size, socket.CMSG_SPACE(fd_size))
    fds = _fds_of(ancillary)
    if len(header) != _LENGTH.size or len(fds) != len(STD_FDS):
        for fd in fds:
            _close_quietly(fd)
        raise ProtocolError("a request must start with its length and carry fds 0, 1 and 2")
    (length,) = _LENGTH.unpack(header)
    if length > MAX_REQUEST_BYTES:
        raise ProtocolError(f"a request of {length} bytes is too large")
    body = _receive_exactly(sock, length)
    return json.loads(body), fds


def send_reply(sock: socket.socket, kind: str, value: int) -> None:
    """Send the reply line ``<kind> <value>``; a launcher that is gone is not an error."""
    with contextlib.suppress(OSError):
        sock.sendall(f"{kind} {value}\n".encode("ascii"))


def receive_pid(sock: socket.socket) -> int | None:
    """The first reply's pid; None when the zygote hung up instead.

    Read a byte at a time: what follows the line is the stand-in's to read, after an exec.
    """
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            return None
        line += byte
    kind, _, value = line.decode("ascii").partition(" ")
    if kind != PID_REPLY or not value.strip().isdigit():
        raise ProtocolError(f"expected a pid, got {line!r}")
    return int(value)


def _fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _receive_exactly(sock: socket.socket, length: int) -> bytes:
    chunks = []
    while length:
        chunk = sock.recv(min(length, 1 << 20))
        if not chunk:
            raise ProtocolError("the request ended early")
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
