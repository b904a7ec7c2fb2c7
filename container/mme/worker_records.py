"""What a model's workers leave in the server's private folder for the gateway to read.

MMS tells neither which processes serve a model nor why a LOAD failed ("Failed to start
workers"). Each worker of our handler service therefore records, at LOAD:

* itself and, when it is MMS's per-model server process, the process that forked it (a
  prefork worker's parent is the zygote, which serves every model), with their start
  times, so that an UNLOAD can wait until they are gone (a pid that was reused by
  another process is never waited for, nor killed);
* the one-line reason when its LOAD fails, which the gateway puts in its answer;
* how many requests the model answers at once, and how long a batch may wait to fill,
  once it has loaded (the gateway batches its requests accordingly).

Layout: ``<server temp dir>/models/<hash of the model name>/{workers/<pid>,load-error,batching}``
(a hash, because a model name can be longer than a file name may be).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil

import psutil

MODELS_DIR = "models"
LOAD_ERROR = "load-error"
BATCHING = "batching"


def model_folder(server_temp_dir: str, model_name: str) -> str:
    """The folder of the records of ``model_name``."""
    digest = hashlib.sha256(model_name.encode("utf-8", "surrogatepass")).hexdigest()
    return os.path.join(server_temp_dir, MODELS_DIR, digest[:32])


def record_worker(server_temp_dir: str, model_name: str) -> None:
    """Record this process, and its parent when it serves ``model_name`` alone, as processes
    of ``model_name``."""
    if not server_temp_dir:
        return  # not under `mme serve`: nobody reads the records
    # From /proc, not psutil: a worker forked from the prefork zygote would copy the pages of
    # every psutil object it touches (half a MiB per worker).
    pid, parent = os.getpid(), os.getppid()
    entries = [(pid, _start_ticks(pid))]
    if _serves(parent, model_name):
        entries.append((parent, _start_ticks(parent)))
    folder = os.path.join(model_folder(server_temp_dir, model_name), "workers")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, str(pid)), "w", encoding="utf-8") as out:
        json.dump(entries, out)


def record_connection(server_temp_dir: str, model_name: str, number: int) -> None:
    """Record that this worker also serves MMS's worker ``number`` of ``model_name``, on a
    thread (mme.prefork.shared_connections), when it recorded itself at LOAD."""
    if not server_temp_dir:
        return
    folder = os.path.join(model_folder(server_temp_dir, model_name), "workers")
    mine = os.path.join(folder, str(os.getpid()))
    with contextlib.suppress(OSError):
        shutil.copyfile(mine, f"{mine}-{number}")


def record_load_failure(server_temp_dir: str, model_name: str, reason: str) -> None:
    """Record why the LOAD of ``model_name`` failed (one line)."""
    if not server_temp_dir:
        return
    folder = model_folder(server_temp_dir, model_name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOAD_ERROR), "w", encoding="utf-8") as out:
        out.write(" ".join(reason.split()))


def load_failure(server_temp_dir: str, model_name: str) -> str:
    """Why the last LOAD of ``model_name`` failed, as its worker said; "" if it did not say."""
    try:
        with open(
            os.path.join(model_folder(server_temp_dir, model_name), LOAD_ERROR), encoding="utf-8"
        ) as reason:
            return reason.read().strip()
    except OSError:
        return ""


def record_batching(
    server_temp_dir: str, model_name: str, max_size: int, max_delay_ms: int
) -> None:
    """Record how ``model_name`` batches: ``max_size`` requests at most, ``max_delay_ms``."""
    if not server_temp_dir:
        return
    folder = model_folder(server_temp_dir, model_name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, BATCHING), "w", encoding="utf-8") as out:
        json.dump([max_size, max_delay_ms], out)


def batching(server_temp_dir: str, model_name: str) -> tuple[int, int]:
    """How ``model_name`` batches (size, delay in ms); (1, 0) when its worker did not say."""
    with (
        contextlib.suppress(OSError, ValueError, TypeError),
        open(
            os.path.join(model_folder(server_temp_dir, model_name), BATCHING), encoding="utf-8"
        ) as record,
    ):
        size, delay = json.load(record)
        return max(1, int(size)), max(0, int(delay))
    return 1, 0


def model_processes(server_temp_dir: str, model_name: str) -> list[psutil.Process]:
    """The recorded processes of ``model_name`` that still run (the same processes, by start
    time, not others that reuse their pids)."""
    return list(_running(server_temp_dir, model_name)[0])


def model_workers(server_temp_dir: str, model_name: str) -> list[psutil.Process]:
    """The worker processes of ``model_name`` that still run (not the processes that forked
    them); a process that serves several of MMS's workers is listed once."""
    return [p for p, worker in _running(server_temp_dir, model_name)[0].items() if worker]


def model_processes_and_workers(
    server_temp_dir: str, model_name: str
) -> tuple[list[psutil.Process], int]:
    """:func:`model_processes`, and how many of MMS's workers they serve, from one reading
    of the records."""
    running, workers = _running(server_temp_dir, model_name)
    return list(running), workers


def worker_starts(server_temp_dir: str, model_name: str) -> int:
    """How many workers of ``model_name`` started since its LOAD: MMS's restarts of a worker
    that died are recorded too."""
    return len(_listdir(os.path.join(model_folder(server_temp_dir, model_name), "workers")))


def _running(server_temp_dir: str, model_name: str) -> tuple[dict[psutil.Process, bool], int]:
    """The model's recorded processes that still run, each with whether it is a worker (a
    record's first entry) rather than the process that forked one; and how many of the
    records' workers still run (a worker process that serves several connections has a
    record for each)."""
    folder = os.path.join(model_folder(server_temp_dir, model_name), "workers")
    found: dict[int, tuple[psutil.Process, bool]] = {}
    checked: dict[tuple[int, int], psutil.Process | None] = {}
    workers = 0
    for entry in _listdir(folder):
        for index, (pid, started) in enumerate(_entries(os.path.join(folder, entry))):
            if (pid, started) not in checked:
                checked[pid, started] = _same_process(pid, started)
            process = checked[pid, started]
            if process is not None:
                found[pid] = (process, index == 0 or found.get(pid, (process, False))[1])
                workers += index == 0
    return dict(found.values()), workers


def forget(server_temp_dir: str, model_name: str) -> None:
    """Drop every record of ``model_name`` (before its LOAD, after its UNLOAD)."""
    shutil.rmtree(model_folder(server_temp_dir, model_name), ignore_errors=True)


def _serves(pid: int, model_name: str) -> bool:
    """Whether process ``pid`` runs for ``model_name`` alone (its command line names it)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            args = cmdline.read().split(b"\0")
    except OSError:
        return False
    name = model_name.encode("utf-8", "surrogateescape")
    return any(a == b"--model-name" and b == name for a, b in itertools.pairwise(args))


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot: with the pid, it names one
    process, never a later one that reuses the pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # Field 22; the command name (field 2) is in parentheses and may hold spaces.
            return int(stat.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _entries(path: str) -> list[tuple[int, int]]:
    with (
        contextlib.suppress(OSError, ValueError, TypeError),
        open(path, encoding="utf-8") as record,
    ):
        return [(int(pid), int(started)) for pid, started in json.load(record)]
    return []


def _same_process(pid: int, started: int) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        if _start_ticks(pid) == started and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
    return None
