"""The one "poll until a deadline" loop that tests and tools share."""

from __future__ import annotations

import itertools
import time

from harness.polling import settle, wait_until


def test_wait_until_returns_as_soon_as_the_condition_holds() -> None:
    calls = itertools.count(1)
    started = time.monotonic()
    assert wait_until(lambda: next(calls) >= 3, timeout_s=30, interval_s=0.01)
    assert time.monotonic() - started < 5
    assert next(calls) == 4  # asked three times, no more


def test_wait_until_gives_up_at_the_deadline() -> None:
    started = time.monotonic()
    assert not wait_until(lambda: 0, timeout_s=0.2, interval_s=0.05)
    assert 0.2 <= time.monotonic() - started < 5


def test_settle_returns_the_last_value_taken() -> None:
    values = iter([1, 2, 3, 4, 5])
    assert settle(lambda: next(values), lambda value: value >= 3, 30, 0.01) == 3
    assert settle(lambda: 7, lambda value: value < 0, 0.1, 0.02) == 7
