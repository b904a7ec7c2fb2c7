"""A server's processes, and which of them serve a model, read from their command lines.

MMS starts one process per model (the stock backend, which forks the worker per connection;
with prefork workers, a stand-in, while the zygote forks the worker); each of them carries
``--model-name <name>`` on its command line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` runs (a zombie does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cmdline(process: psutil.Process) -> list[str]:
    """The command line of ``process``; empty for a zombie or a process gone."""
    try:
        return [] if process.status() == psutil.STATUS_ZOMBIE else process.cmdline()
    except psutil.Error:
        return []


def descendants(pid: int) -> list[psutil.Process]:
    """Every process under ``pid`` (children, theirs...); none once ``pid`` is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def model_name(args: list[str]) -> str | None:
    """The model a command line serves (``--model-name <name>``); None if none."""
    return next((value for flag, value in itertools.pairwise(args) if flag == "--model-name"), None)


def model_processes(
    processes: Iterable[psutil.Process], name: str | None = None
) -> list[psutil.Process]:
    """Those of ``processes`` that run for model ``name`` (None: for any model): the one MMS
    starts per model and the worker."""
    return [
        process
        for process in processes
        if (served := model_name(cmdline(process))) is not None and (name is None or served == name)
    ]


def model_workers(
    processes: Iterable[psutil.Process], name: str | None = None
) -> list[psutil.Process]:
    """The worker processes of model ``name`` (None: of any model) among ``processes``: the
    ones MMS does not start itself (it starts the model's backend, which forks them; with
    prefork workers, a stand-in for the backend, while the zygote forks them)."""
    return [
        process
        for process in model_processes(processes, name)
        if alive(process) and not _started_by_mms(process)
    ]


def _started_by_mms(process: psutil.Process) -> bool:
    try:
        return process.parent().name() == "java"
    except (psutil.Error, AttributeError):  # no parent any more: it is no worker of ours
        return True


def runs_worker(processes: Iterable[psutil.Process], worker_id: str) -> bool:
    """Whether a Python worker by MMS's worker id (``9000-ab12``) runs among ``processes``."""
    socket_suffix = f".mms.sock.{worker_id.split('-')[0]}"
    return any(
        arg.endswith(socket_suffix)
        for process in processes
        if alive(process)
        for arg in cmdline(process)
    )


def on_this_machine(started_for: Callable[[list[str]], bool]) -> list[psutil.Process]:
    """Every live process on this machine, in any process tree, whose command line
    ``started_for`` accepts: a worker whose parent died is adopted outside the server's tree."""
    return [
        process
        for process in psutil.process_iter()
        if alive(process) and started_for(cmdline(process))
    ]


def running_for(model_dir: Path) -> list[psutil.Process]:
    """Every live process on this machine started for ``model_dir``."""
    return on_this_machine(lambda args: str(model_dir) in args)
