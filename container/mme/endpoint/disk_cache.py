"""The endpoint's disk cache: extracted models in one folder, within a byte budget.

Each model lives in ``<root>/<model id>/model``, as the container's LOAD reads it. A model
that is pinned (loaded, in use, or being fetched) is never removed; the others go least
recently used first, when a new model takes the cache over its budget, and all of them when
the disk is full, as SageMaker deletes unused models' files. A folder is renamed out of the
way under the lock (fast) and deleted after it.
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mme.endpoint.errors import InsufficientStorageError
from mme.endpoint.extraction import STAGING_PREFIX, ExtractionLimits, extract_archive

logger = logging.getLogger(__name__)

MODEL_ID_CHARS = 32
DOWNLOADS_DIR = ".downloads"
TRASH_PREFIX = ".trash-"
_MODEL_ID = re.compile(rf"^[0-9a-f]{{{MODEL_ID_CHARS}}}$")

# Writes the archive to the path given, reading at most the bytes given.
Fetch = Callable[[Path, int], object]


@dataclass
class _Stored:
    """What the cache holds of one model."""

    label: str  # the TargetModel, for the log
    size: int
    last_used: int


def model_id(location: str) -> str:
    """The opaque, path-safe id of the archive at ``location``: the name of its folder
    here, and the name the container knows the model by."""
    return hashlib.sha256(location.encode("utf-8")).hexdigest()[:MODEL_ID_CHARS]


class DiskCache:
    """Extracted models under ``root``, at most ``budget_bytes`` of them beyond the pinned."""

    def __init__(self, root: Path, budget_bytes: int, limits: ExtractionLimits) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.limits = limits
        self._stored: dict[str, _Stored] = {}
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self._clock = itertools.count(1)

    def model_dir(self, model_id: str) -> Path:
        """Where the model's files are: ``<root>/<model id>/model``."""
        return self.root / model_id / "model"

    def holds(self, model_id: str) -> bool:
        """Whether the model is extracted here."""
        with self._lock:
            return model_id in self._stored

    def pin(self, model_id: str) -> None:
        """Keep the model (once it is here) until :meth:`unpin`."""
        with self._lock:
            self._pinned.add(model_id)

    def unpin(self, model_id: str) -> None:
        """The model may go when room is needed; it counts as used just now."""
        with self._lock:
            self._pinned.discard(model_id)
            stored = self._stored.get(model_id)
            if stored is not None:
                stored.last_used = next(self._clock)

    def fill(self, model_id: str, label: str, fetch: Fetch) -> int:
        """Fetch the model's archive with ``fetch`` and extract it; returns its bytes.

        Pin the model first, or the next trim may remove it. When the disk is full, every
        unpinned model is removed and the fetch is tried once more; if it still does not
        fit, InsufficientStorageError (507). Nothing of a failed try is left.
        """
        self.remove(model_id)  # left by an earlier run, maybe stale
        size = self._fill_with_room(model_id, label, fetch)
        with self._lock:
            self._stored[model_id] = _Stored(label, size, next(self._clock))
        return size

    def trim(self) -> None:
        """Remove unpinned models, least recently used first, until the cache fits its
        budget."""
        with self._lock:
            doomed, total = self._trim(self.budget_bytes)
        _delete(doomed)
        if total > self.budget_bytes:
            logger.warning(
                "the disk cache holds %d bytes, over its limit of %d: the rest is loaded or in use",
                total,
                self.budget_bytes,
            )

    def remove(self, model_id: str) -> None:
        """Delete the model's files now."""
        with self._lock:
            self._stored.pop(model_id, None)
            doomed = _trash(self.root / model_id)
        _delete([doomed])

    def remove_leftovers(self) -> None:
        """Remove what an earlier run left in the root: model folders, downloads, staging."""
        self.root.mkdir(parents=True, exist_ok=True)
        for child in self.root.iterdir():
            ours = (
                (_MODEL_ID.match(child.name) and (child / "model").is_dir())
                or child.name == DOWNLOADS_DIR
                or child.name.startswith((TRASH_PREFIX, STAGING_PREFIX))
            )
            if ours and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)

    def _fill_with_room(self, model_id: str, label: str, fetch: Fetch) -> int:
        """:meth:`_fetch_and_extract`, once more after emptying the cache if the disk was full."""
        for attempt in (1, 2):
            try:
                return self._fetch_and_extract(model_id, fetch)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if attempt == 2:
                    raise InsufficientStorageError(
                        f"No space left on the endpoint's disk for model {label}, even after "
                        "removing every model that is not loaded."
                    ) from exc
            with self._lock:
                freed, _ = self._trim(budget=0)
            _delete(freed)
            logger.warning(
                "disk full while fetching %s: removed %d unused model(s), retrying",
                label,
                len([f for f in freed if f is not None]),
            )
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _fetch_and_extract(self, model_id: str, fetch: Fetch) -> int:
        """One try: the archive into ``.downloads``, then extracted; nothing left if it fails."""
        downloads = self.root / DOWNLOADS_DIR
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / f"{model_id}-{uuid.uuid4().hex}.tar.gz"
        try:
            fetch(archive, self.limits.max_bytes)
            return extract_archive(archive, self.model_dir(model_id), self.limits)
        except BaseException:
            shutil.rmtree(self.root / model_id, ignore_errors=True)
            raise
        finally:
            archive.unlink(missing_ok=True)

    def _trim(self, budget: int) -> tuple[list[Path | None], int]:
        """Drop unpinned models, least recently used first, until the cache fits ``budget``.

        Called with the lock held. Returns the renamed folders, for the caller to delete
        once the lock is released, and the bytes the cache still holds.
        """
        total = sum(stored.size for stored in self._stored.values())
        idle = sorted(
            (item for item in self._stored.items() if item[0] not in self._pinned),
            key=lambda item: item[1].last_used,
        )
        doomed: list[Path | None] = []
        for model_id, stored in idle:
            if total <= budget:
                break
            total -= stored.size
            del self._stored[model_id]
            doomed.append(_trash(self.root / model_id))
            logger.info("removed %s from the disk cache", stored.label)
        return doomed, total


def _trash(folder: Path) -> Path | None:
    """Rename a model folder out of the way (fast enough to do under the lock)."""
    if not folder.exists():
        return None
    doomed = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    os.rename(folder, doomed)
    return doomed


def _delete(folders: list[Path | None]) -> None:
    for folder in folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
