"""What a worker does around each LOAD and each batch so that MMS's gaps do not leak.

Two gaps of MMS 1.1.11, both seen in tests/faults:

* When a worker takes longer than the response timeout, MMS answers the client with
  an error and starts another worker, but never stops the one that hangs: a
  ``model_fn`` stuck forever leaves a process (and its memory, its GPU memory) behind
  for every LOAD that SageMaker retries. A worker that outlives the timeout has been
  abandoned, so the guard ends it.
  When MMS gives up on a LOAD this way, it may also fail to unregister the model (its
  clean-up thread is interrupted, as after an out-of-memory LOAD), which would leave the
  model registered without workers and answer 409 to every retried LOAD: an abandoned
  LOAD reports itself to `mme serve`'s stale-model sweeper before the worker ends.
* On SIGTERM, MMS resets the connections of the requests in flight. Each worker
  marks itself busy in the server's private folder while it works, so that
  `mme serve` can wait for the work in flight before it stops MMS.
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

import psutil

logger = logging.getLogger(__name__)

BUSY_DIR = "in-flight"
ABANDON_GRACE_S = 5.0  # MMS's clock starts before the worker's: end a little after MMS gives up
ABANDONED_EXIT_CODE = 75
BUSY, IDLE = b"1", b"0"


def _abandon(what: str, limit_s: float, on_abandon: Callable[[], None] | None) -> None:
    if on_abandon is not None:
        with contextlib.suppress(Exception):  # ending the worker matters more
            on_abandon()
    logger.error(
        "%s did not finish within %.0f s (SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS): MMS has "
        "answered with an error and given up on this worker, so it exits", what, limit_s,
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
    """One thread per worker that ends the worker when its current LOAD or batch overruns.

    Arming and disarming cost a lock and a notify: a thread (or a Timer) per request
    would add about a millisecond to every request.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._cond = threading.Condition()
        self._job: _Job | None = None

    def arm(self, job: _Job) -> None:
        """Watch ``job`` until :meth:`disarm`."""
        if self._pid != os.getpid():
            # First use in this process (a worker is forked): threads do not survive a fork.
            self._pid, self._cond, self._job = os.getpid(), threading.Condition(), None
            threading.Thread(target=self._run, daemon=True, name="worker-watchdog").start()
        with self._cond:
            self._job = job
            self._cond.notify()

    def disarm(self) -> None:
        """The job finished in time."""
        with self._cond:
            self._job = None

    def _run(self) -> None:
        with self._cond:
            while True:
                job = self._job
                if job is None:
                    self._cond.wait()
                    continue
                remaining = job.deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        _abandon(job.what, job.limit_s, job.on_abandon)


class _BusyFlag:
    """This worker's marker file, kept open: b"1" while it works, b"0" in between.

    Writing one byte in place costs microseconds; creating and removing a file for each
    request cost a third of a millisecond.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._fd = -1

    def set(self, server_temp_dir: str, busy: bool) -> None:
        """Mark this worker busy or idle."""
        if self._pid != os.getpid():
            marker = busy_marker(server_temp_dir, os.getpid())
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            self._pid, self._fd = os.getpid(), os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(self._fd, BUSY if busy else IDLE, 0)


_watchdog = _Watchdog()
_busy_flag = _BusyFlag()


def busy_marker(server_temp_dir: str, pid: int) -> str:
    """The file that says whether the worker ``pid`` is working."""
    return os.path.join(server_temp_dir, BUSY_DIR, str(pid))


@contextlib.contextmanager
def guarded(what: str, limit_s: float, server_temp_dir: str,
            on_abandon: Callable[[], None] | None = None) -> Iterator[None]:
    """Run a LOAD or a batch marked busy, and end the worker if it outlives ``limit_s``.

    ``on_abandon`` runs just before the worker ends (it must be quick).
    """
    # Not under `mme serve` (a plain MMS), nobody waits for us: no marker.
    if server_temp_dir:
        _busy_flag.set(server_temp_dir, True)
    _watchdog.arm(_Job(what, limit_s, time.monotonic() + limit_s + ABANDON_GRACE_S, on_abandon))
    try:
        yield
    finally:
        _watchdog.disarm()
        if server_temp_dir:
            _busy_flag.set(server_temp_dir, False)


def _alive(pid: int) -> bool:
    # A killed worker stays a zombie until its parent reaps it: that is not working.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def busy_workers(server_temp_dir: str) -> list[int]:
    """The pids of live workers that are loading a model or answering requests now.

    A worker killed in the middle of its work leaves its marker behind; it is
    ignored (and removed) because that worker no longer runs.
    """
    folder = os.path.join(server_temp_dir, BUSY_DIR)
    busy = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        if not entry.isdigit():
            continue
        path = os.path.join(folder, entry)
        if not _alive(int(entry)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        elif _reads(path) == BUSY:
            busy.append(int(entry))
    return busy


def _reads(path: str) -> bytes:
    try:
        with open(path, "rb") as marker:
            return marker.read(1)
    except FileNotFoundError:
        return b""
