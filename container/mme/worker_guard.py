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
from collections.abc import Callable, Iterator

import psutil

logger = logging.getLogger(__name__)

BUSY_DIR = "in-flight"
ABANDON_GRACE_S = 5.0  # MMS's clock starts before the worker's: end a little after MMS gives up
ABANDONED_EXIT_CODE = 75


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


@contextlib.contextmanager
def _deadline(what: str, limit_s: float,
              on_abandon: Callable[[], None] | None) -> Iterator[None]:
    timer = threading.Timer(limit_s + ABANDON_GRACE_S, _abandon,
                            args=(what, limit_s, on_abandon))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def busy_marker(server_temp_dir: str, pid: int) -> str:
    """The file that says that the worker ``pid`` is working."""
    return os.path.join(server_temp_dir, BUSY_DIR, str(pid))


@contextlib.contextmanager
def _busy(server_temp_dir: str) -> Iterator[None]:
    if not server_temp_dir:  # not under `mme serve` (a plain MMS): nobody waits for us
        yield
        return
    marker = busy_marker(server_temp_dir, os.getpid())
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w", encoding="utf-8"):
        pass
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(marker)


@contextlib.contextmanager
def guarded(what: str, limit_s: float, server_temp_dir: str,
            on_abandon: Callable[[], None] | None = None) -> Iterator[None]:
    """Run a LOAD or a batch marked busy, and end the worker if it outlives ``limit_s``.

    ``on_abandon`` runs just before the worker ends (it must be quick).
    """
    with _busy(server_temp_dir), _deadline(what, limit_s, on_abandon):
        yield


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
        if _alive(int(entry)):
            busy.append(int(entry))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))
    return busy
