"""The endpoint's models: which are loaded, the calls that use them, and one job per model.

Each model has at most one job at a time (fetch and LOAD, the UNLOAD of an eviction, or a
retirement in ModelCacheSetting=Disabled mode): every call that needs the model while a
job runs waits on that same job, so concurrent first calls cause exactly one download and
one load. LOADs run one at a time, which keeps ``max_loaded_models`` exact; eviction picks
the least recently used model, idle ones first. A model's files are pinned in the disk
cache while it is loaded, used, or has a job; after that they stay until the cache needs
their room.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus

from mme.endpoint.artifacts import ArtifactStore
from mme.endpoint.background import run_in_background
from mme.endpoint.container_api import Answer
from mme.endpoint.disk_cache import DiskCache, model_id
from mme.endpoint.errors import ModelNotReadyError, ServiceUnavailableError
from mme.endpoint.loader import LoadFailedError, ModelLoader
from mme.endpoint.metrics import Metrics, ModelLabels, elapsed_us

logger = logging.getLogger(__name__)

MAX_ACQUIRE_ROUNDS = 4  # a model unloaded again right after its load: give up after a few


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


@dataclass
class Phases:
    """Microseconds spent in each phase of the jobs a call waited for."""

    download_us: int | None = None
    load_us: int | None = None
    unload_us: int | None = None

    def merge(self, other: Phases) -> Phases:
        """The sum of both, phase by phase."""
        return Phases(
            _add(self.download_us, other.download_us),
            _add(self.load_us, other.load_us),
            _add(self.unload_us, other.unload_us),
        )


@dataclass(eq=False)
class ModelEntry:
    """One TargetModel: its opaque id, whether it is loaded, and its job (if any)."""

    target_model: str
    model_id: str
    loaded: bool = False
    job: Future[Phases] | None = None
    in_flight: int = 0
    last_used: int = 0
    losses: int = 0  # how often the container was found to have lost it (see _lost)

    @property
    def labels(self) -> ModelLabels:
        """The labels of the model's metrics."""
        return ModelLabels(self.target_model, self.model_id)

    def busy(self) -> bool:
        """Whether its files must stay on disk: loaded, used or with a job."""
        return self.loaded or self.job is not None or self.in_flight > 0


@dataclass
class Lease:
    """A loaded model, held by one call while it calls the container."""

    entry: ModelEntry
    cache_hit: bool
    wait_us: int
    phases: Phases
    losses: int  # the entry's count when the lease was taken

    @property
    def model_id(self) -> str:
        """The name the container knows the model by."""
        return self.entry.model_id


Call = Callable[[Lease], Answer]


@dataclass(frozen=True)
class RegistryConfig:
    """When models are loaded and unloaded."""

    max_loaded_models: int = 0  # 0: no limit but the container's memory (507)
    load_wait_s: float = 60.0  # a call waits this long for a load, then gets 429
    cache_enabled: bool = True  # False: ModelCacheSetting=Disabled


class ModelRegistry:
    """The endpoint's models: fetched from ``store`` into ``disk``, loaded by ``loader``."""

    def __init__(
        self,
        store: ArtifactStore,
        disk: DiskCache,
        loader: ModelLoader,
        config: RegistryConfig,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.disk = disk
        self.loader = loader
        self.config = config
        self.metrics = metrics
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._clock = itertools.count(1)
        self._closed = False

    def model_id(self, target_model: str) -> str:
        """The opaque, path-safe name the container knows the model by."""
        return model_id(self.store.url(target_model))

    def serve(self, target_model: str, call: Call) -> Answer:
        """``call(lease)`` with the model loaded, and its answer.

        If the container answers that it lost the model (restarted, or it was evicted
        meanwhile), the model is loaded again, once, and called again, as SageMaker does.
        Raises LoadFailedError when the container refuses the LOAD, ModelNotReadyError
        when the model is not loaded within ``load_wait_s`` (the load goes on).
        """
        for attempt in (1, 2):
            lease = self._acquire(target_model)
            try:
                answer = call(lease)
                if attempt == 1 and self._lost(lease, answer.status):
                    continue
            finally:
                self._release(lease)
            return answer
        raise AssertionError("unreachable: the second attempt returns")

    def close(self) -> None:
        """Start no more jobs; running ones end with the process (their threads are daemons)."""
        with self._lock:
            self._closed = True

    # ----- leases

    def _acquire(self, target_model: str) -> Lease:
        """The model, loaded; raise ModelNotReadyError if that takes over ``load_wait_s``."""
        started = time.monotonic_ns()
        deadline = time.monotonic() + self.config.load_wait_s
        hit: bool | None = None
        phases = Phases()
        for _ in range(MAX_ACQUIRE_ROUNDS):
            with self._lock:
                entry = self._entry(target_model)
                if entry.job is None and entry.loaded:
                    entry.in_flight += 1
                    entry.last_used = next(self._clock)
                    return Lease(entry, hit is None, elapsed_us(started), phases, entry.losses)
                hit = False
                job = entry.job if entry.job is not None else self._start_job(self._prepare, entry)
            phases = phases.merge(self._wait(job, deadline, target_model))
        raise ServiceUnavailableError(
            f"Model {target_model} was unloaded as soon as it loaded; "
            "too many models for the container's memory?"
        )

    def _wait(self, job: Future[Phases], deadline: float, target_model: str) -> Phases:
        try:
            return job.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            raise ModelNotReadyError(
                f"Model {target_model} is still downloading or loading after "
                f"{self.config.load_wait_s:g} s. Wait and try your request again."
            ) from None

    def _release(self, lease: Lease) -> None:
        """The call is done with the model; with the cache disabled, retire it when idle."""
        with self._lock:
            entry = lease.entry
            entry.in_flight -= 1
            if (
                not self.config.cache_enabled
                and entry.in_flight == 0
                and entry.job is None
                and entry.loaded
            ):
                self._start_job(self._retire, entry)
            self._sync_pin(entry)

    def _lost(self, lease: Lease, status: int) -> bool:
        """Whether the container's ``status`` says it lost the model; if so, the next
        acquire loads it again.

        The container answers 404 for a model it does not have, and 503 ("No worker is
        available") while another call's LOAD of it again has registered it but its worker
        is not up yet; that other call has counted the loss, so the lease is outdated.
        """
        with self._lock:
            entry = lease.entry
            outdated = entry.losses != lease.losses
            if status != HTTPStatus.NOT_FOUND and not (
                status == HTTPStatus.SERVICE_UNAVAILABLE and outdated
            ):
                return False
            if not outdated and entry.job is None and entry.loaded:
                entry.losses += 1
                self._set_loaded(entry, False)
            return True

    # ----- the table (called with self._lock held)

    def _entry(self, target_model: str) -> ModelEntry:
        entry = self._entries.get(target_model)
        if entry is None:
            entry = ModelEntry(target_model, self.model_id(target_model))
            self._entries[target_model] = entry
        return entry

    def _set_loaded(self, entry: ModelEntry, loaded: bool) -> None:
        entry.loaded = loaded
        self.metrics.set_gauge("LoadedModelCount", self._count_loaded())
        self._sync_pin(entry)

    def _sync_pin(self, entry: ModelEntry) -> None:
        """Pin the model's files while it is busy; otherwise the disk cache may drop them."""
        if entry.busy():
            self.disk.pin(entry.model_id)
        else:
            self.disk.unpin(entry.model_id)

    def _start_job(self, work: Callable[[ModelEntry], Phases], entry: ModelEntry) -> Future[Phases]:
        """Run ``work(entry)`` as the entry's job, in the background."""
        # Pinned before the job starts: the disk cache, which does not take our lock, must
        # not remove files the job has just fetched.
        self.disk.pin(entry.model_id)
        if self._closed:
            job: Future[Phases] = Future()
            job.set_exception(ServiceUnavailableError("The endpoint is shutting down."))
        else:
            job = run_in_background(
                partial(self._run_job, work, entry), f"model-job-{entry.model_id[:8]}"
            )
        entry.job = job  # before the job's end can clear it: that takes our lock first
        return job

    def _run_job(self, work: Callable[[ModelEntry], Phases], entry: ModelEntry) -> Phases:
        try:
            return work(entry)
        finally:
            with self._lock:
                entry.job = None
                self._sync_pin(entry)
                if not entry.busy() and not self.disk.holds(entry.model_id):
                    # Nothing of it is left (a missing archive, a failed LOAD, a retired
                    # model): no entry is kept, so made-up TargetModels cannot grow the table.
                    self._entries.pop(entry.target_model, None)

    # ----- jobs (each on a thread of its own)

    def _prepare(self, entry: ModelEntry) -> Phases:
        """Fetch the model if its files are not on disk, then LOAD it."""
        phases = Phases()
        if not self.disk.holds(entry.model_id):
            phases.download_us = self._fetch(entry)
        try:
            phases.load_us, phases.unload_us = self._load(entry)
        except LoadFailedError as failed:
            self._forget_failed_load(entry, failed)
            raise
        return phases

    def _fetch(self, entry: ModelEntry) -> int:
        """Fetch and extract the archive into the disk cache; returns microseconds."""
        started = time.monotonic_ns()
        size = self.disk.fill(
            entry.model_id, entry.target_model, partial(self.store.fetch, entry.target_model)
        )
        elapsed = elapsed_us(started)
        self.metrics.observe("ModelDownloadingTime", elapsed, entry.labels)
        logger.info(
            "fetched %s (%d bytes extracted) into %s in %d us",
            self.store.url(entry.target_model),
            size,
            self.disk.model_dir(entry.model_id).parent,
            elapsed,
        )
        self.disk.trim()
        return elapsed

    def _load(self, entry: ModelEntry) -> tuple[int, int | None]:
        """LOAD the model, making room first; returns (load, unload) microseconds."""
        with self._load_lock:
            unload_us = self._make_room(exclude=entry)
            load_us, freed_us = self.loader.load(
                entry.labels, partial(self._evict_one, exclude=entry)
            )
        with self._lock:
            entry.last_used = next(self._clock)
            self._set_loaded(entry, True)
        return load_us, _add(unload_us, freed_us)

    def _forget_failed_load(self, entry: ModelEntry, failed: LoadFailedError) -> None:
        """Delete the files of a model whose LOAD the container refused.

        As on SageMaker, a failed LOAD caches nothing: the next call fetches the archive
        again, so a fixed archive uploaded under the same name serves at once.
        """
        logger.warning(
            "LOAD of %s (container model %s) failed with %d: %s; the next call fetches it again",
            entry.target_model,
            entry.model_id,
            failed.status,
            failed.message,
        )
        self.disk.remove(entry.model_id)

    def _retire(self, entry: ModelEntry) -> Phases:
        """UNLOAD the model and delete its files (ModelCacheSetting=Disabled)."""
        unload_us = self.loader.unload(entry.labels)
        with self._lock:
            self._set_loaded(entry, False)
        self.disk.remove(entry.model_id)
        return Phases(unload_us=unload_us)

    def _make_room(self, exclude: ModelEntry) -> int | None:
        """Unload models until one more fits under ``max_loaded_models``."""
        limit = self.config.max_loaded_models
        unload_us: int | None = None
        while limit > 0 and self._loaded_count() >= limit:
            freed = self._evict_one(exclude)
            if freed is None:
                break
            unload_us = _add(unload_us, freed)
        return unload_us

    def _loaded_count(self) -> int:
        with self._lock:
            return self._count_loaded()

    def _count_loaded(self) -> int:
        """How many models are loaded (the caller holds the lock)."""
        return sum(1 for e in self._entries.values() if e.loaded)

    def _evict_one(self, exclude: ModelEntry) -> int | None:
        """Unload the least recently used model (idle ones first); None if there is none."""
        with self._lock:
            candidates = [
                e for e in self._entries.values() if e is not exclude and e.loaded and e.job is None
            ]
            if not candidates:
                return None
            victim = min(candidates, key=lambda e: (e.in_flight > 0, e.last_used))
            done: Future[Phases] = Future()
            victim.job = done  # calls for the victim now wait, then load it again
        try:
            return self.loader.unload(victim.labels)
        finally:
            with self._lock:
                victim.job = None
                self._set_loaded(victim, False)
            done.set_result(Phases())
