"""Each worker's memory: right after its model loaded, and at the end of the traffic."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from soak.census import worker_memory_mib


@dataclass
class WorkerMemory:
    """One worker (by pid) of one model: USS and RSS in MiB, first seen and at the end."""

    target: str
    pid: int
    first_seen_s: float | None  # None: not seen before the end
    first: dict[str, float] | None
    end: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as plain data."""
        return asdict(self)


class WorkerWatch:
    """Measures a worker the first time its model answers (its load and first call done)."""

    def __init__(self, serve_pid: int) -> None:
        self.serve_pid = serve_pid
        self.started = time.monotonic()
        self.workers: dict[int, WorkerMemory] = {}
        self._current: dict[str, int] = {}  # model id -> the pid measured last
        self._lock = threading.Lock()

    def answered(self, target: str, model_id: str) -> None:
        """``target`` (the container's ``model_id``) just answered: measure a new worker.

        The model is loaded at this point and has served a call, so what its worker holds
        now is the cost of the model, not of a load under way."""
        with self._lock:
            pid = self._current.get(model_id)
            if pid is not None and psutil.pid_exists(pid):
                return
            for pid, memory in worker_memory_mib(self.serve_pid, model_id).items():
                if pid not in self.workers:
                    self.workers[pid] = WorkerMemory(
                        target, pid, round(time.monotonic() - self.started, 1), memory
                    )
                self._current[model_id] = pid

    def finish(self, model_ids: dict[str, str]) -> list[WorkerMemory]:
        """Measure every worker alive now; those measured before too, oldest first."""
        with self._lock:
            ended = []
            for target, model_id in model_ids.items():
                for pid, memory in worker_memory_mib(self.serve_pid, model_id).items():
                    record = self.workers.setdefault(pid, WorkerMemory(target, pid, None, None))
                    record.end = memory
                    ended.append(record)
            return sorted(ended, key=lambda record: record.first_seen_s or float("inf"))
