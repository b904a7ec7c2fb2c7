"""Safe extraction, on real archives in tmp_path: all inside the target, or nothing at all."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from harness.models import scaled_model
from mme.endpoint.extraction import ExtractionLimits, UnsafeArchiveError, extract_archive
from tests.endpoint.archives import bomb_archive, hostile_archive, pack

LIMITS = ExtractionLimits(max_bytes=4 * 1024 * 1024, max_members=50)


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_model_archive_is_extracted_whole(tmp_path: Path) -> None:
    source = scaled_model(tmp_path / "src", 2.0, code="def model_fn(model_dir):\n    pass\n")
    archive = pack(source, tmp_path / "model.tar.gz")
    target = tmp_path / "cache" / "id" / "model"

    size = extract_archive(archive, target, LIMITS)

    assert _all_files(target) == {"model.pt", "code", "code/inference.py"}
    assert (target / "model.pt").read_bytes() == (source / "model.pt").read_bytes()
    assert size == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert os.listdir(target.parent) == ["model"]  # no staging folder left beside it


def test_links_inside_the_model_are_kept(tmp_path: Path) -> None:
    source = scaled_model(tmp_path / "src", 2.0)
    (source / "weights").mkdir()
    (source / "weights" / "latest.pt").symlink_to("../model.pt")
    target = tmp_path / "cache" / "id" / "model"

    extract_archive(pack(source, tmp_path / "m.tar.gz"), target, LIMITS)

    assert (target / "weights" / "latest.pt").read_bytes() == (source / "model.pt").read_bytes()


@pytest.mark.parametrize(
    "kind", ["dotdot", "absolute", "symlink-out", "symlink-chain", "hardlink-out", "device", "fifo"]
)
def test_hostile_archives_leave_nothing_behind(tmp_path: Path, kind: str) -> None:
    sandbox = tmp_path / "sandbox"  # everything the archive could reach with ../..
    target = sandbox / "cache" / "id" / "model"
    archive = hostile_archive(tmp_path / "archives" / f"{kind}.tar.gz", kind)
    before = _all_files(tmp_path)

    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, target, LIMITS)

    assert not target.exists()
    assert os.listdir(target.parent) == []  # no staging folder, no partial model
    created = _all_files(tmp_path) - before
    assert created <= {"sandbox", "sandbox/cache", "sandbox/cache/id"}, created
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_an_archive_bomb_is_refused_before_it_is_written(tmp_path: Path) -> None:
    archive = bomb_archive(tmp_path / "bomb.tar.gz", 64 * 1024 * 1024)
    assert archive.stat().st_size < 1024 * 1024
    target = tmp_path / "cache" / "id" / "model"

    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        extract_archive(archive, target, LIMITS)

    assert os.listdir(target.parent) == []


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for index in range(LIMITS.max_members + 1):
        (source / f"f{index}").write_text("x")
    target = tmp_path / "cache" / "id" / "model"

    with pytest.raises(UnsafeArchiveError, match="more than 50 members"):
        extract_archive(pack(source, tmp_path / "many.tar.gz"), target, LIMITS)

    assert os.listdir(target.parent) == []


@pytest.mark.parametrize("content", [b"", b"this is not a tar archive", b"\x1f\x8b\x08garbage"])
def test_something_else_than_a_tar_gz_is_refused(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(content)
    target = tmp_path / "cache" / "id" / "model"

    with pytest.raises(UnsafeArchiveError, match=r"not a valid tar\.gz"):
        extract_archive(archive, target, LIMITS)

    assert os.listdir(target.parent) == []


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    source = scaled_model(tmp_path / "src", 2.0)
    (source / "big.bin").write_bytes(os.urandom(200_000))
    whole = pack(source, tmp_path / "whole.tar.gz").read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    target = tmp_path / "cache" / "id" / "model"

    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, target, LIMITS)

    assert os.listdir(target.parent) == []


def test_tarfile_still_lists_what_the_hostile_archives_hold(tmp_path: Path) -> None:
    """Guards the test data itself: each hostile archive really holds its trick."""
    archive = hostile_archive(tmp_path / "slip.tar.gz", "dotdot")
    with tarfile.open(archive) as tar:
        assert any(name.startswith("../") for name in tar.getnames())
