"""What a model's processes use, read from the records its workers leave (worker_records).

This reads /proc, so a scrape calls it off the gateway's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from mme import worker_records


@dataclass(frozen=True)
class WorkerUsage:
    """A model's live workers, their memory, and how often MMS restarted one."""

    workers: int
    memory_bytes: int
    restarts: int


def restarts(server_temp_dir: str, model_name: str, workers_per_model: int) -> int:
    """Workers started for the model beyond the ones its LOAD started."""
    return max(0, worker_records.worker_starts(server_temp_dir, model_name) - workers_per_model)


def usage(server_temp_dir: str, model_name: str, workers_per_model: int) -> WorkerUsage:
    """What the model's processes use now.

    The memory is the resident set size of every process of the model (its workers and the
    processes that forked them). Pages shared with other processes, such as the pre-forked
    workers' torch, count in each model. The proportional set size would share them out,
    but the kernel walks every page of a process to tell it (~15 ms for a worker with
    torch): too slow for a scrape of hundreds of models.
    """
    processes, workers = worker_records.model_processes_and_workers(server_temp_dir, model_name)
    return WorkerUsage(
        workers,
        sum(_resident(p) for p in processes),
        restarts(server_temp_dir, model_name, workers_per_model),
    )


def _resident(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0  # it exited meanwhile
