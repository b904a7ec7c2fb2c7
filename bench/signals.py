"""SIGTERM as an exception, so that ``finally`` blocks stop what a process started."""

from __future__ import annotations

import signal
from types import FrameType


def exit_on_sigterm() -> None:
    """From now on SIGTERM raises SystemExit(143) in the main thread (Python would just die)."""
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
