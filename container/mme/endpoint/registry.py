"""Which models are on disk and loaded, and the one place that downloads, loads and unloads.

Each model has at most one job at a time (download+extract+LOAD, an UNLOAD, or a
retirement in ModelCacheSetting=Disabled mode): every call that needs the model while
a job runs waits on that same job, so concurrent first calls cause exactly one
download and one load. LOADs run one at a time, which keeps ``max_loaded_models``
exact; eviction picks the least recently used model, idle ones first. Unloaded models
stay extracted on disk until the disk cache is over its byte budget.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path

from mme.endpoint.artifacts import ArtifactStore
from mme.endpoint.container_api import ContainerClient
from mme.endpoint.errors import (
    InsufficientStorageError,
    ModelError,
    ModelNotReadyError,
    ServiceUnavailableError,
)
from mme.endpoint.extraction import ExtractionLimits, extract_archive
from mme.endpoint.metrics import Metrics, ModelLabels

logger = logging.getLogger(__name__)

ABSENT, ON_DISK, LOADED = "absent", "on disk", "loaded"
MODEL_ID_CHARS = 32
FAILED_LOAD_GRACE_S = 5.0
MAX_ACQUIRE_ROUNDS = 4  # a model unloaded again right after its load: give up after a few
MAX_STALE_ROUNDS = 3
DOWNLOADS_DIR = ".downloads"
TRASH_PREFIX = ".trash-"
_MODEL_ID = re.compile(rf"^[0-9a-f]{{{MODEL_ID_CHARS}}}$")


def _elapsed_us(started_ns: int) -> int:
    return (time.monotonic_ns() - started_ns) // 1000


@dataclass
class Phases:
    """Microseconds spent in each phase of the jobs a call waited for."""

    download_us: int | None = None
    load_us: int | None = None
    unload_us: int | None = None

    def merge(self, other: Phases) -> Phases:
        """The sum of both, phase by phase."""
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)
        return Phases(add(self.download_us, other.download_us),
                      add(self.load_us, other.load_us), add(self.unload_us, other.unload_us))


@dataclass(eq=False)
class ModelEntry:
    """One TargetModel: its opaque id, where it is, and the job running for it (if any)."""

    target_model: str
    model_id: str
    state: str = ABSENT
    job: Future[Phases] | None = None
    in_flight: int = 0
    last_used: int = 0
    disk_bytes: int = 0
    losses: int = 0  # how often the container was found to have lost it (see invalidate)


@dataclass
class Lease:
    """A loaded model held by one call; give it back with :meth:`ModelRegistry.release`."""

    entry: ModelEntry
    cache_hit: bool
    wait_us: int
    phases: Phases
    losses: int  # the entry's count when the lease was taken


@dataclass(frozen=True)
class RegistryConfig:
    """How the registry stores and loads models."""

    models_root: Path  # where archives are extracted, <root>/<model id>/model
    container_models_dir: str  # the same folder as the container sees it
    limits: ExtractionLimits
    cache_max_bytes: int
    max_loaded_models: int = 0  # 0: no limit but the container's memory (507)
    load_wait_s: float = 60.0  # a call waits this long for a load, then gets 429
    cache_enabled: bool = True  # False: ModelCacheSetting=Disabled
    log_stream_arn: str = ""


class ModelRegistry:
    """The endpoint's models: fetched from ``store``, loaded into ``container``."""

    def __init__(self, store: ArtifactStore, container: ContainerClient,
                 config: RegistryConfig, metrics: Metrics) -> None:
        self.store = store
        self.container = container
        self.config = config
        self.metrics = metrics
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._clock = itertools.count(1)
        self._closed = False

    # ----- the calls' side

    def model_id(self, target_model: str) -> str:
        """The opaque, path-safe name the container knows the model by."""
        digest = hashlib.sha256(self.store.url(target_model).encode("utf-8")).hexdigest()
        return digest[:MODEL_ID_CHARS]

    def acquire(self, target_model: str) -> Lease:
        """The model, loaded; raise ModelNotReadyError if that takes over ``load_wait_s``."""
        started = time.monotonic_ns()
        deadline = time.monotonic() + self.config.load_wait_s
        hit: bool | None = None
        phases = Phases()
        for _ in range(MAX_ACQUIRE_ROUNDS):
            with self._lock:
                entry = self._entry(target_model)
                if entry.job is None and entry.state == LOADED:
                    entry.in_flight += 1
                    entry.last_used = next(self._clock)
                    return Lease(entry, hit is None, _elapsed_us(started), phases,
                                 entry.losses)
                hit = False
                if entry.job is None:
                    entry.job = self._start_job(self._prepare, entry)
                job = entry.job
            phases = phases.merge(self._wait(job, deadline, target_model))
        raise ServiceUnavailableError(f"Model {target_model} was unloaded as soon as it loaded; "
                                      "too many models for the container's memory?")

    def _wait(self, job: Future[Phases], deadline: float, target_model: str) -> Phases:
        try:
            return job.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            raise ModelNotReadyError(
                f"Model {target_model} is still downloading or loading after "
                f"{self.config.load_wait_s:g} s. Wait and try your request again."
            ) from None

    def release(self, lease: Lease) -> None:
        """The call is done with the model; with the cache disabled, retire it when idle."""
        with self._lock:
            entry = lease.entry
            entry.in_flight -= 1
            if (not self.config.cache_enabled and entry.in_flight == 0 and entry.job is None
                    and entry.state == LOADED):
                entry.job = self._start_job(self._retire, entry)

    def invalidate(self, lease: Lease) -> None:
        """The container does not know the model (404): load it again on the next acquire."""
        with self._lock:
            entry = lease.entry
            if entry.losses == lease.losses and entry.job is None and entry.state == LOADED:
                entry.state = ON_DISK
                entry.losses += 1
                self._publish_count()

    def outdated(self, lease: Lease) -> bool:
        """Whether another call found the model lost since ``lease`` was taken.

        The container then answers a call that holds the old lease with 404, or with 503
        while the model is LOADed again (registered, its worker not up yet).
        """
        with self._lock:
            return lease.entry.losses != lease.losses

    def close(self) -> None:
        """Start no more jobs; running ones end with the process (their threads are daemons)."""
        with self._lock:
            self._closed = True

    # ----- jobs (each on its own daemon thread)

    def _start_job(self, work: Callable[[ModelEntry], Phases], entry: ModelEntry
                   ) -> Future[Phases]:
        """Run ``work(entry)`` on a daemon thread: a LOAD hanging for minutes must not keep
        the process from exiting on SIGTERM, as a pool's worker threads would."""
        future: Future[Phases] = Future()
        if self._closed:
            future.set_exception(ServiceUnavailableError("The endpoint is shutting down."))
            return future

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(work(entry))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True, name=f"model-job-{entry.model_id[:8]}").start()
        return future

    def _entry(self, target_model: str) -> ModelEntry:
        entry = self._entries.get(target_model)
        if entry is None:
            entry = ModelEntry(target_model, self.model_id(target_model))
            self._entries[target_model] = entry
        return entry

    def _prepare(self, entry: ModelEntry) -> Phases:
        try:
            phases = Phases()
            if entry.state == ABSENT:
                phases.download_us = self._download(entry)
            try:
                phases.load_us, phases.unload_us = self._load(entry)
            except ModelError as error:
                self._forget_failed_load(entry, error)
                raise
            return phases
        finally:
            with self._lock:
                entry.job = None
                if entry.state == ABSENT and entry.in_flight == 0:
                    # Failed before anything reached the disk (a missing archive, say): no
                    # entry is kept, so made-up TargetModels cannot grow the table.
                    self._entries.pop(entry.target_model, None)

    def _forget_failed_load(self, entry: ModelEntry, error: ModelError) -> None:
        """Delete the files of a model whose LOAD the container refused.

        As on SageMaker, a failed LOAD caches nothing: the next call fetches the archive
        again, so a fixed archive uploaded under the same name serves at once.
        """
        logger.warning("LOAD of %s (container model %s) failed with %d: %s; the next call "
                       "fetches it again", entry.target_model, entry.model_id,
                       error.original_status, error.original_message)
        with self._lock:
            entry.state = ABSENT
            entry.disk_bytes = 0
            doomed = self._trash(self._folder(entry))
        _delete([doomed])

    def _retire(self, entry: ModelEntry) -> Phases:
        try:
            unload_us = self._unload(entry)
            with self._lock:
                entry.state = ABSENT
                entry.disk_bytes = 0
                self._publish_count()
                doomed = self._trash(self._folder(entry))
            _delete([doomed])
            return Phases(unload_us=unload_us)
        finally:
            with self._lock:
                entry.job = None

    def _folder(self, entry: ModelEntry) -> Path:
        return self.config.models_root / entry.model_id

    def _download(self, entry: ModelEntry) -> int:
        """Fetch and extract the archive into ``<root>/<id>/model``; returns microseconds.

        When the disk is full, the models that are on disk but not loaded are deleted (as
        SageMaker does) and the download is tried once more.
        """
        started = time.monotonic_ns()
        with self._lock:
            doomed = self._trash(self._folder(entry))  # left by an earlier run, maybe stale
        _delete([doomed])
        size = self._fetch_with_room(entry)
        elapsed = _elapsed_us(started)
        self.metrics.observe("ModelDownloadingTime", elapsed, _labels(entry))
        with self._lock:
            entry.state = ON_DISK
            entry.disk_bytes = size
            evicted, total = self._trim_disk_cache(keep=entry, budget=self.config.cache_max_bytes)
        _delete(evicted)
        if total > self.config.cache_max_bytes:
            logger.warning("the disk cache holds %d bytes, over its limit of %d: the rest is "
                           "loaded or in use", total, self.config.cache_max_bytes)
        logger.info("fetched %s (%d bytes extracted) into %s in %d us",
                    self.store.url(entry.target_model), size, self._folder(entry), elapsed)
        return elapsed

    def _fetch_with_room(self, entry: ModelEntry) -> int:
        """:meth:`_fetch_and_extract`, once more after emptying the disk cache if it was full."""
        for attempt in (1, 2):
            try:
                return self._fetch_and_extract(entry)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if attempt == 2:
                    raise InsufficientStorageError(
                        f"No space left on the endpoint's disk for model {entry.target_model}, "
                        "even after removing every model that is not loaded.") from exc
            with self._lock:
                freed, _ = self._trim_disk_cache(keep=entry, budget=0)
            _delete(freed)
            logger.warning("disk full while fetching %s: removed %d unused model(s), retrying",
                           entry.target_model, len([f for f in freed if f is not None]))
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _fetch_and_extract(self, entry: ModelEntry) -> int:
        """One try: the archive into ``.downloads``, then extracted; nothing left if it fails."""
        folder = self._folder(entry)
        downloads = self.config.models_root / DOWNLOADS_DIR
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / f"{entry.model_id}-{uuid.uuid4().hex}.tar.gz"
        try:
            self.store.fetch(entry.target_model, archive, self.config.limits.max_bytes)
            return extract_archive(archive, folder / "model", self.config.limits)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            archive.unlink(missing_ok=True)

    def _load(self, entry: ModelEntry) -> tuple[int, int | None]:
        """LOAD the model, making room first; returns (load, unload) microseconds."""
        url = f"{self.config.container_models_dir.rstrip('/')}/{entry.model_id}/model"
        with self._load_lock:
            unload_us = self._make_room(exclude=entry)
            elapsed, freed_us = self._load_until_it_fits(entry, url)
        if freed_us is not None:
            unload_us = (unload_us or 0) + freed_us
        self.metrics.observe("ModelLoadingTime", elapsed, _labels(entry))
        with self._lock:
            entry.state = LOADED
            entry.last_used = next(self._clock)
            self._publish_count()
        logger.info("loaded %s as %s in %d us", entry.target_model, entry.model_id, elapsed)
        return elapsed, unload_us

    def _load_until_it_fits(self, entry: ModelEntry, url: str) -> tuple[int, int | None]:
        """LOAD; on 507 unload the least recently used model and retry (as SageMaker does).

        Returns the last LOAD's microseconds and those spent unloading other models.
        """
        unload_us: int | None = None
        stale_rounds = 0  # 409s after a 507: the failed registration, still there
        while True:
            started = time.monotonic_ns()
            answer = self.container.load(entry.model_id, url)
            elapsed = _elapsed_us(started)
            if answer.status == 200 or (answer.status == 409 and stale_rounds == 0):
                return elapsed, unload_us  # 409 on a first try: loaded by an earlier run
            if answer.status == 409 and stale_rounds <= MAX_STALE_ROUNDS:
                # MMS can show the failed model gone for a moment and then still hold it.
                stale_rounds += 1
                self._clear_failed_load(entry.model_id)
                continue
            if answer.status != 507:
                raise ModelError(answer.status, answer.message(), self.config.log_stream_arn)
            stale_rounds = 1
            self._clear_failed_load(entry.model_id)
            freed = self._evict_one(exclude=entry)
            if freed is None:
                raise ModelError(507, answer.message(), self.config.log_stream_arn)
            unload_us = (unload_us or 0) + freed

    def _clear_failed_load(self, model_id: str) -> None:
        """Make sure a model whose LOAD got 507 is no longer registered before the retry.

        MMS 1.1.11 keeps such a model registered without workers (a retried LOAD would get
        409, and every invoke 503). Our container unregisters it on its own within a
        moment; unregistering it here at the same time would race with that and could
        remove the retried load, so we wait for it, and do it ourselves only for a
        container that does not (after FAILED_LOAD_GRACE_S).
        """
        deadline = time.monotonic() + FAILED_LOAD_GRACE_S
        while time.monotonic() < deadline:
            if self.container.describe(model_id) == 404:
                return
            time.sleep(0.1)
        self.container.unload(model_id)

    def _make_room(self, exclude: ModelEntry) -> int | None:
        limit = self.config.max_loaded_models
        unload_us: int | None = None
        while limit > 0 and self._loaded_count() >= limit:
            freed = self._evict_one(exclude)
            if freed is None:
                break
            unload_us = (unload_us or 0) + freed
        return unload_us

    def _loaded_count(self) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.state == LOADED)

    def _evict_one(self, exclude: ModelEntry) -> int | None:
        """Unload the least recently used model (idle ones first); None if there is none."""
        with self._lock:
            candidates = [e for e in self._entries.values()
                          if e is not exclude and e.state == LOADED and e.job is None]
            if not candidates:
                return None
            victim = min(candidates, key=lambda e: (e.in_flight > 0, e.last_used))
            done: Future[Phases] = Future()
            victim.job = done  # calls for the victim now wait, then load it again
        try:
            return self._unload(victim)
        finally:
            with self._lock:
                victim.state = ON_DISK
                victim.job = None
                self._publish_count()
            done.set_result(Phases())

    def _unload(self, entry: ModelEntry) -> int:
        started = time.monotonic_ns()
        answer = self.container.unload(entry.model_id)
        elapsed = _elapsed_us(started)
        if answer.status not in (200, 404):
            logger.warning("UNLOAD %s answered %d: %s", entry.model_id, answer.status,
                           answer.message())
        self.metrics.observe("ModelUnloadingTime", elapsed, _labels(entry))
        logger.info("unloaded %s (%s) in %d us", entry.target_model, entry.model_id, elapsed)
        return elapsed

    # ----- disk (called with self._lock held)

    def _trim_disk_cache(self, keep: ModelEntry, budget: int
                         ) -> tuple[list[Path | None], int]:
        """Drop unloaded models, least recently used first, until the cache fits ``budget``.

        Returns the renamed folders, for the caller to delete once the lock is released,
        and the bytes the cache still holds.
        """
        total = sum(e.disk_bytes for e in self._entries.values())
        idle = sorted((e for e in self._entries.values()
                       if e.state == ON_DISK and e.job is None and e.in_flight == 0
                       and e is not keep), key=lambda e: e.last_used)
        doomed: list[Path | None] = []
        for entry in idle:
            if total <= budget:
                break
            total -= entry.disk_bytes
            entry.state = ABSENT
            entry.disk_bytes = 0
            doomed.append(self._trash(self._folder(entry)))
            logger.info("removed %s from the disk cache", entry.target_model)
        return doomed, total

    @staticmethod
    def _trash(folder: Path) -> Path | None:
        """Rename a model folder out of the way (fast enough to do under the lock)."""
        if not folder.exists():
            return None
        doomed = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
        os.rename(folder, doomed)
        return doomed

    def _publish_count(self) -> None:
        count = sum(1 for e in self._entries.values() if e.state == LOADED)
        self.metrics.set_gauge("LoadedModelCount", count)


def _labels(entry: ModelEntry) -> ModelLabels:
    """The labels of the entry's series: the same as the container gives the model."""
    return ModelLabels(entry.target_model, entry.model_id)


def _delete(folders: list[Path | None]) -> None:
    for folder in folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def clean_models_root(root: Path) -> None:
    """Remove what an earlier run left in ``root``: model folders, downloads, staging."""
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        ours = (_MODEL_ID.match(child.name) and (child / "model").is_dir()) or child.name in (
            DOWNLOADS_DIR,) or child.name.startswith((TRASH_PREFIX, ".extracting-"))
        if ours and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
