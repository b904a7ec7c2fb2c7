"""Free TCP ports that MMS accepts."""

from __future__ import annotations

import random
import socket

from mme.settings import MAX_MMS_PORT

FIRST_PORT = 20000


def free_port() -> int:
    """A TCP port that nothing listens on now, at most 32766 (MMS refuses higher ones).

    Asking the kernel for port 0 does not do: its ephemeral range usually starts above
    32766, so random ports from below the limit are tried instead.
    """
    chooser = random.Random()
    for _ in range(200):
        port = chooser.randint(FIRST_PORT, MAX_MMS_PORT)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # MMS binds every address
            except OSError:
                continue
        return port
    raise OSError(f"found no free port in {FIRST_PORT}..{MAX_MMS_PORT}")
