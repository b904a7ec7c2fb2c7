"""Work on a daemon thread, with a Future to wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


def run_in_background(work: Callable[[], T], name: str) -> Future[T]:
    """Start ``work()`` on a daemon thread called ``name``; the Future gets its outcome.

    A daemon thread, not a pool's: a LOAD hanging for minutes must not keep the process
    from exiting on SIGTERM, and a pool's threads are joined at exit.
    """
    future: Future[T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name=name).start()
    return future
