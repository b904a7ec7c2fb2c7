"""Finding a server's workers by their process tree, and waiting for them, boundedly."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from mme.worker_guard import busy_workers
from tests.server_process import NativeServer

POLL_S = 0.2


def _live(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _serves(process: psutil.Process, name: str) -> bool:
    try:
        args = process.cmdline()
    except psutil.Error:
        return False
    return any(a == "--model-name" and b == name for a, b in itertools.pairwise(args))


def model_workers(server: NativeServer, name: str) -> list[psutil.Process]:
    """The worker processes of model ``name``: the ones MMS does not start itself (it starts
    the model's backend, which forks them; with prefork workers, a stand-in for the backend,
    while the zygote forks them)."""
    return [
        process for process in server.descendants()
        if _live(process) and _serves(process, name) and not _started_by_mms(process)
    ]


def _started_by_mms(process: psutil.Process) -> bool:
    try:
        return process.parent().name() == "java"
    except (psutil.Error, AttributeError):  # no parent any more: it is no worker of ours
        return True


def running_for(model_dir: Path) -> list[psutil.Process]:
    """Every live process on this machine, in any process tree, started for ``model_dir``."""
    found = []
    for process in psutil.process_iter():
        try:
            if _live(process) and str(model_dir) in process.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def busy_markers(server: NativeServer) -> list[str]:
    """The worker pids that mark themselves busy in the server's private folder."""
    for process in server.descendants():
        args = process.cmdline() if _live(process) else []
        if "--tmp-dir" in args:
            return sorted(str(pid) for pid in busy_workers(args[args.index("--tmp-dir") + 1]))
    return []


def eventually(condition: Callable[[], bool], within_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``within_s`` passes (False)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True
