"""Waiting for a condition, boundedly: one loop for every "poll until a deadline"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.2


def settle(
    take: Callable[[], T], done: Callable[[T], object], timeout_s: float, interval_s: float = POLL_S
) -> T:
    """Call ``take()`` every ``interval_s`` until ``done(value)`` holds or ``timeout_s``
    passes; the last value (the caller judges it)."""
    deadline = time.monotonic() + timeout_s
    value = take()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = take()
    return value


def wait_until(
    condition: Callable[[], object], timeout_s: float, interval_s: float = POLL_S
) -> bool:
    """Poll ``condition()`` every ``interval_s`` until it is true or ``timeout_s`` passes;
    whether it came true."""
    return bool(settle(condition, bool, timeout_s, interval_s))
