"""What a worker does around each LOAD and each batch so that a hung one does not leak.

When a worker takes longer than the response timeout, MMS 1.1.11 answers the client with
an error and starts another worker, but never stops the one that hangs: a ``model_fn``
stuck forever leaves a process (and its memory, its GPU memory) behind for every LOAD
that SageMaker retries. A worker that outlives the timeout has been abandoned, so the
guard ends it; an abandoned LOAD first records why it failed (``on_abandon``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ABANDON_GRACE_S = 5.0  # MMS's clock starts before the worker's: end a little after MMS gives up
ABANDONED_EXIT_CODE = 75


def _abandon(what: str, limit_s: float, on_abandon: Callable[[], None] | None) -> None:
    if on_abandon is not None:
        with contextlib.suppress(Exception):  # ending the worker matters more
            on_abandon()
    logger.error(
        "%s did not finish within %.0f s (SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS): MMS has "
        "answered with an error and given up on this worker, so it exits",
        what,
        limit_s,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(ABANDONED_EXIT_CODE)  # the main thread is stuck in user code: no clean exit


@dataclass(frozen=True)
class _Job:
    what: str
    limit_s: float
    deadline: float
    on_abandon: Callable[[], None] | None


class _Watchdog:
    """One thread per worker that ends the worker when a LOAD or batch overruns (one per
    thread that serves a connection: mme.prefork.shared_connections).

    Arming and disarming cost a lock and a notify: a thread (or a Timer) per request
    would add about a millisecond to every request.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._cond = threading.Condition()
        self._jobs: dict[int, _Job] = {}  # a serving thread's ident -> its current job

    def arm(self, job: _Job) -> None:
        """Watch ``job`` of the calling thread until :meth:`disarm`."""
        if self._pid != os.getpid():
            # First use in this process (a worker is forked): threads do not survive a fork.
            self._pid, self._cond, self._jobs = os.getpid(), threading.Condition(), {}
            threading.Thread(target=self._run, daemon=True, name="worker-watchdog").start()
        with self._cond:
            self._jobs[threading.get_ident()] = job
            self._cond.notify()

    def disarm(self) -> None:
        """The calling thread's job finished in time."""
        with self._cond:
            self._jobs.pop(threading.get_ident(), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                job = min(self._jobs.values(), key=lambda j: j.deadline, default=None)
                if job is None:
                    self._cond.wait()
                    continue
                remaining = job.deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        _abandon(job.what, job.limit_s, job.on_abandon)


_watchdog = _Watchdog()


@contextlib.contextmanager
def guarded(
    what: str, limit_s: float, on_abandon: Callable[[], None] | None = None
) -> Iterator[None]:
    """Run a LOAD or a batch, and end the worker if it outlives ``limit_s``.

    ``on_abandon`` runs just before the worker ends (it must be quick).
    """
    _watchdog.arm(_Job(what, limit_s, time.monotonic() + limit_s + ABANDON_GRACE_S, on_abandon))
    try:
        yield
    finally:
        _watchdog.disarm()
