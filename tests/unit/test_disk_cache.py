"""The endpoint's disk cache: its budget, its LRU order, pins, a full disk, leftovers."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mme.endpoint.disk_cache import DOWNLOADS_DIR, DiskCache, model_id
from mme.endpoint.errors import InsufficientStorageError
from mme.endpoint.extraction import ExtractionLimits, UnsafeArchiveError
from tests.endpoint.archives import files_archive

KIB = 1024
LIMITS = ExtractionLimits(max_bytes=1024 * KIB)


def _fetch_from(archive: Path) -> Callable[[Path, int], None]:
    def fetch(destination: Path, max_bytes: int) -> None:
        assert max_bytes == LIMITS.max_bytes
        shutil.copy(archive, destination)

    return fetch


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A model of 10 KiB."""
    return files_archive(tmp_path / "m.tar.gz", {"model.pt": b"x" * 10 * KIB})


def _fill(cache: DiskCache, name: str, archive: Path) -> str:
    key = model_id(name)
    cache.fill(key, name, _fetch_from(archive))
    return key


def _folders(cache: DiskCache) -> set[str]:
    return {p.name for p in cache.root.iterdir() if not p.name.startswith(".")}


def test_a_model_is_extracted_into_its_folder(tmp_path: Path, archive: Path) -> None:
    cache = DiskCache(tmp_path / "cache", 100 * KIB, LIMITS)

    key = model_id("s3://b/a.tar.gz")
    size = cache.fill(key, "a.tar.gz", _fetch_from(archive))

    assert size == 10 * KIB
    assert cache.holds(key)
    assert (cache.model_dir(key) / "model.pt").read_bytes() == b"x" * 10 * KIB
    assert cache.model_dir(key) == tmp_path / "cache" / key / "model"
    assert list((cache.root / DOWNLOADS_DIR).iterdir()) == []  # the archive is gone


def test_trim_removes_unpinned_models_least_recently_used_first(
    tmp_path: Path, archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = DiskCache(tmp_path / "cache", 25 * KIB, LIMITS)
    a, b, c = (_fill(cache, name, archive) for name in ("a", "b", "c"))
    cache.pin(c)
    cache.unpin(a)  # a was used after b

    with caplog.at_level(logging.INFO, logger="mme.endpoint.disk_cache"):
        cache.trim()

    assert [cache.holds(key) for key in (a, b, c)] == [True, False, True]
    assert _folders(cache) == {a, c}
    assert "removed b from the disk cache" in caplog.text


def test_pinned_models_stay_over_the_budget(
    tmp_path: Path, archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = DiskCache(tmp_path / "cache", 0, LIMITS)
    key = model_id("a")
    cache.pin(key)
    _fill(cache, "a", archive)

    cache.trim()

    assert cache.holds(key)
    assert "over its limit of 0" in caplog.text
    cache.unpin(key)
    cache.trim()
    assert not cache.holds(key)
    assert _folders(cache) == set()


def test_a_full_disk_removes_every_unpinned_model_and_tries_again(
    tmp_path: Path, archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = DiskCache(tmp_path / "cache", 100 * KIB, LIMITS)
    a, b = _fill(cache, "a", archive), _fill(cache, "b", archive)
    cache.pin(b)
    tries = []

    def full_once(destination: Path, max_bytes: int) -> None:
        tries.append(destination)
        if len(tries) == 1:
            destination.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copy(archive, destination)

    key = model_id("c")
    cache.fill(key, "c", full_once)

    assert [cache.holds(k) for k in (a, b, key)] == [False, True, True]
    assert "disk full while fetching c: removed 1 unused model(s), retrying" in caplog.text
    assert list((cache.root / DOWNLOADS_DIR).iterdir()) == []


def test_a_model_bigger_than_the_disk_is_507_and_leaves_nothing(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache", 100 * KIB, LIMITS)

    def always_full(destination: Path, max_bytes: int) -> None:
        destination.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InsufficientStorageError, match=r"No space left .* model huge"):
        cache.fill(model_id("huge"), "huge", always_full)

    assert not cache.holds(model_id("huge"))
    assert _folders(cache) == set()
    assert list((cache.root / DOWNLOADS_DIR).iterdir()) == []


def test_a_refused_archive_leaves_nothing(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache", 100 * KIB, LIMITS)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")

    with pytest.raises(UnsafeArchiveError):
        cache.fill(model_id("broken"), "broken", _fetch_from(broken))

    assert not cache.holds(model_id("broken"))
    assert [p.name for p in cache.root.iterdir()] == [DOWNLOADS_DIR]
    assert list((cache.root / DOWNLOADS_DIR).iterdir()) == []


def test_remove_deletes_the_files_at_once(tmp_path: Path, archive: Path) -> None:
    cache = DiskCache(tmp_path / "cache", 100 * KIB, LIMITS)
    key = _fill(cache, "a", archive)
    cache.pin(key)

    cache.remove(key)

    assert not cache.holds(key)
    assert list(cache.root.iterdir()) == [cache.root / DOWNLOADS_DIR]


def test_leftovers_of_an_earlier_run_are_removed_and_nothing_else(
    tmp_path: Path, archive: Path
) -> None:
    root = tmp_path / "cache"
    earlier = DiskCache(root, 100 * KIB, LIMITS)
    key = _fill(earlier, "a", archive)
    for name in (".trash-x", ".extracting-y", DOWNLOADS_DIR, "user-data", "0" * 32):
        (root / name).mkdir(exist_ok=True)

    DiskCache(root, 100 * KIB, LIMITS).remove_leftovers()

    assert not (root / key).exists()
    assert sorted(p.name for p in root.iterdir()) == ["0" * 32, "user-data"]  # no model inside
