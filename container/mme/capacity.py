"""How many models the container can hold, by each limit it meets; checked at each LOAD.

Thousands of small models meet other limits before memory: every model costs the Java
frontend (MMS) threads, open files and memory mappings, the zygote open files, and the
machine processes and threads. Past a limit, the first sign would be MMS failing to start a
thread or to open a file in the middle of some LOAD. So `mme serve`

* raises, before MMS and the zygote start, what a process may raise itself (the soft
  limits of open files and processes, to the hard limits; see
  :func:`mme.system_limits.raise_soft_limits`);
* once they run, works out from what they use with no model and what a model adds
  (:class:`PerModel`) how many models each limit allows, and logs it;
* answers a LOAD with 507 when the next model would pass a limit, ``MME_MAX_LOADED_MODELS``,
  or leave less than ``MME_MIN_AVAILABLE_MEMORY_MB`` of memory: SageMaker then unloads
  other models and sends the LOAD again.

A tenth of each limit is kept back: torch starts thread pools in a worker that runs large
operations, and the server opens connections and files as it serves.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mme import system_limits
from mme.settings import Settings

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
KEPT_BACK = 0.1  # of each limit, for what the server uses besides its models


@dataclass(frozen=True)
class PerModel:
    """What one loaded model adds, with ``workers`` workers (measured on MMS 1.1.11):
    processes, or threads of one process when they ``share`` the model (prefork only)."""

    workers: int
    prefork: bool
    share: bool = False

    @property
    def java_threads(self) -> int:
        """MMS's threads: the backend's own, its stdout and stderr readers and its process
        reaper; per worker, the worker thread and the readers of its two log pipes."""
        return 4 + 3 * self.workers

    @property
    def java_fds(self) -> int:
        """MMS's files: the backend's three standard streams; per worker, its connection
        and its two log pipes."""
        return 3 + 3 * self.workers

    @property
    def java_maps(self) -> int:
        """MMS's memory mappings: each thread's stack and its guard page."""
        return 2 * self.java_threads

    @property
    def zygote_fds(self) -> int:
        """The zygote's files (prefork): the model's socket, the stand-in's connection and
        its three standard streams; the feed of the worker that serves the model's workers."""
        return (6 if self.share else 5) if self.prefork else 0

    @property
    def tasks(self) -> int:
        """Processes and threads on the machine: MMS's, the process that MMS starts (the
        stand-in, or the stock backend), and each worker's main and watchdog threads (a
        stock worker also runs a thread of OpenBLAS's); a worker that serves the model's
        workers runs its feed's thread and a thread per further worker."""
        if self.share:
            return self.java_threads + 1 + 3 + (self.workers - 1)
        return self.java_threads + 1 + (2 if self.prefork else 3) * self.workers


@dataclass(frozen=True)
class Bound:
    """One limit, and how many models it allows."""

    name: str  # the limit, as the user would set it: RLIMIT_NOFILE, kernel.pid_max...
    counts: str  # what it counts, and whose
    limit: int
    per_model: int
    models: int

    def describe(self) -> str:
        """``<name> (<limit> <counts>, <per model> per model): <models>``."""
        return f"{self.name} ({self.limit_text()}): {self.models:,}"

    def limit_text(self) -> str:
        """``<limit> <counts>, <per model> per model``."""
        per_model = f", {self.per_model} per model" if self.per_model else ""
        return f"{self.limit:,} {self.counts}{per_model}"


def bound(
    name: str, counts: str, limit: int | None, used: int | None, per_model: int
) -> Bound | None:
    """The models that ``limit`` allows when ``used`` is in use and a model adds
    ``per_model``; None when there is no such limit."""
    if limit is None or used is None or per_model <= 0:
        return None
    room = int(limit * (1 - KEPT_BACK)) - used
    return Bound(name, counts, limit, per_model, max(0, room // per_model))


def raise_limits() -> None:
    """Raise the soft limits that the server's processes will inherit; say which."""
    for name, (before, after) in system_limits.raise_soft_limits().items():
        logger.info("capacity: raised %s from %s to %s (its hard limit)", name, before, after)


def _bounds(
    per_model: PerModel, java_pid: int, zygote_pid: int | None, max_models: int
) -> list[Bound]:
    """What each limit allows (``max_models``, MME_MAX_LOADED_MODELS, 0 for none, first)."""
    nofile = system_limits.soft_limit(resource.RLIMIT_NOFILE)
    tasks = system_limits.tasks_on_system()
    bounds = [
        Bound("MME_MAX_LOADED_MODELS", "models", max_models, 0, max_models) if max_models else None,
        bound(
            "RLIMIT_NOFILE",
            "open files of MMS",
            nofile,
            system_limits.open_fds(java_pid),
            per_model.java_fds,
        ),
        bound(
            "vm.max_map_count",
            "memory maps of MMS",
            system_limits.sysctl("vm/max_map_count"),
            system_limits.memory_maps(java_pid),
            per_model.java_maps,
        ),
        bound(
            "kernel.pid_max",
            "tasks on the machine",
            system_limits.sysctl("kernel/pid_max"),
            tasks,
            per_model.tasks,
        ),
        bound(
            "kernel.threads-max",
            "tasks on the machine",
            system_limits.sysctl("kernel/threads-max"),
            tasks,
            per_model.tasks,
        ),
    ]
    if zygote_pid is not None:
        bounds.append(
            bound(
                "RLIMIT_NOFILE",
                "open files of the zygote",
                nofile,
                system_limits.open_fds(zygote_pid),
                per_model.zygote_fds,
            )
        )
    pids = system_limits.cgroup_pids()
    if pids is not None:
        bounds.append(bound("pids.max", "tasks of the container's cgroup", *pids, per_model.tasks))
    if system_limits.nproc_applies():
        bounds.append(
            bound(
                "RLIMIT_NPROC",
                "tasks of the user",
                system_limits.soft_limit(resource.RLIMIT_NPROC),
                system_limits.tasks_of_user(),
                per_model.tasks,
            )
        )
    return [b for b in bounds if b is not None]


@dataclass
class Capacity:
    """The models the server may hold, and the models it holds or is loading now."""

    per_model: PerModel
    max_models: int
    min_available_bytes: int
    bounds: list[Bound] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    loading: set[str] = field(default_factory=set)

    @classmethod
    def for_settings(cls, settings: Settings) -> Capacity:
        """The capacity that ``settings`` ask for; :meth:`measure` once the server runs."""
        return cls(
            PerModel(
                settings.workers_per_model,
                settings.worker_mode == "prefork",
                settings.shares_model,
            ),
            settings.max_loaded_models,
            settings.min_available_memory_mb * MIB,
        )

    @property
    def most(self) -> Bound | None:
        """The limit that allows the fewest models (None before :meth:`set_bounds`)."""
        return min(self.bounds, key=lambda b: b.models, default=None)

    def measure(self, java_pid: int, zygote_pid: int | None) -> None:
        """Work out what each limit allows, with MMS (``java_pid``) and the zygote running
        and no model loaded, and say it."""
        self.bounds = bounds = _bounds(self.per_model, java_pid, zygote_pid, self.max_models)
        most = self.most
        if most is None:
            return
        logger.info(
            "capacity: up to %s models (%s); models by each limit: %s. Memory: a "
            "LOAD is refused when less than %d MiB is available (MME_MIN_AVAILABLE_"
            "MEMORY_MB)",
            f"{most.models:,}",
            most.name,
            "; ".join(b.describe() for b in sorted(bounds, key=lambda b: b.models)),
            self.min_available_bytes // MIB,
        )

    @contextlib.asynccontextmanager
    async def place(self, model_name: str) -> AsyncIterator[Place]:
        """A place for ``model_name`` while it loads: ``refusal`` says why there is none
        (the LOAD gets 507); set ``loaded`` once the LOAD succeeded."""
        place = Place(self._refusal(model_name))
        fresh = (
            place.refusal is None
            and model_name not in self.loaded
            and model_name not in self.loading
        )
        if fresh:
            self.loading.add(model_name)
        try:
            yield place
        finally:
            if fresh:
                self.loading.discard(model_name)
            if place.loaded:
                self.loaded.add(model_name)

    def release(self, model_name: str) -> None:
        """``model_name`` was unloaded."""
        self.loaded.discard(model_name)

    def _refusal(self, model_name: str) -> str | None:
        if model_name in self.loaded or model_name in self.loading:
            return None  # MMS answers this one (409), or it is SageMaker's retry
        held = len(self.loaded) + len(self.loading)
        most = self.most
        if most is not None and held >= most.models:
            return (
                f"the server holds {held:,} models, as many as {most.name} allows "
                f"({most.limit_text()}); unload a model first"
            )
        available = system_limits.available_memory()
        if available is not None and available < self.min_available_bytes:
            return (
                f"only {available // MIB:,} MiB of memory is available, less than "
                f"MME_MIN_AVAILABLE_MEMORY_MB ({self.min_available_bytes // MIB:,}); "
                "unload a model first"
            )
        return None


@dataclass
class Place:
    """A LOAD's place among the models: why it has none, or whether the model loaded."""

    refusal: str | None
    loaded: bool = False
