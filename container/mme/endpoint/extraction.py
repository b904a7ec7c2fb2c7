"""Safe extraction of a model archive: all of it, inside the target, or nothing at all.

Refused: absolute names, ``..``, links that point (or lead) outside the target,
devices and FIFOs, more members than the limit, and archives that expand past the
byte limit (counted from the headers, before any data is written). The archive is
extracted into a staging folder beside the target and renamed into place, so no
partial model is ever visible.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from mme.endpoint.errors import ValidationError

DEFAULT_MAX_MEMBERS = 100_000
STAGING_PREFIX = ".extracting-"  # the folder an archive is extracted into, beside its target


class UnsafeArchiveError(ValidationError):
    """The archive is malformed or would write outside its target (400)."""


@dataclass(frozen=True)
class ExtractionLimits:
    """How big an archive may get once extracted."""

    max_bytes: int
    max_members: int = DEFAULT_MAX_MEMBERS


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _check_name(name: str) -> str:
    if not name or name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    return os.path.normpath(name)


def _check_type(member: tarfile.TarInfo) -> None:
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(
            f"archive member {member.name!r} is a device, FIFO or other special file"
        )


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """Refuse a member that would write, or point, outside ``root`` (a real path)."""
    name = _check_name(member.name)
    _check_type(member)
    destination = os.path.join(root, name)
    # Resolving against what is already on disk catches writes through earlier symlinks.
    parent = os.path.realpath(os.path.dirname(destination))
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise UnsafeArchiveError(f"link {member.name!r} points to an absolute path")
        base = parent if member.issym() else root
        if member.islnk():
            _check_name(member.linkname)
        target = os.path.realpath(os.path.join(base, member.linkname))
        if not _inside(target, root):
            raise UnsafeArchiveError(f"link {member.name!r} points outside the model folder")
        if not _inside(parent, root):
            raise UnsafeArchiveError(f"archive member {member.name!r} is outside the model folder")
        return
    if not _inside(os.path.realpath(destination), root):
        raise UnsafeArchiveError(f"archive member {member.name!r} is outside the model folder")


def _extract_members(archive: Path, root: str, limits: ExtractionLimits) -> int:
    total = 0
    with tarfile.open(archive, "r:*") as tar:
        for count, member in enumerate(tar, start=1):
            if count > limits.max_members:
                raise UnsafeArchiveError(f"archive has more than {limits.max_members} members")
            _check_member(member, root)
            if member.isreg():
                total += member.size
                if total > limits.max_bytes:
                    raise UnsafeArchiveError(
                        f"archive expands to more than the limit of {limits.max_bytes} bytes"
                    )
            # The "data" filter repeats our checks and drops setuid bits and odd permissions.
            tar.extract(member, root, filter="data")
    return total


def _check_links(root: str) -> None:
    """A link that was fine when written can lead outside once later links exist."""
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                relative = os.path.relpath(path, root)
                raise UnsafeArchiveError(f"link {relative!r} leads outside the model folder")


def extract_archive(archive: Path, target: Path, limits: ExtractionLimits) -> int:
    """Extract ``archive`` to the new folder ``target``; return the bytes of its files.

    Raises UnsafeArchiveError (a ValidationError) when the archive is refused; then
    nothing of it is left on disk.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent)
    root = os.path.realpath(staging)
    try:
        total = _extract_members(archive, root, limits)
        _check_links(root)
        os.rename(root, target)
        return total
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"archive refused: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, KeyError) as exc:
        raise UnsafeArchiveError(f"model data is not a valid tar.gz archive: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
