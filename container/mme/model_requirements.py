"""Installs a model's ``code/requirements.txt`` into a folder of its own.

Multi-model mode serves many models from one environment, so a model's requirements
never go into site-packages. pip first resolves them in a dry run against the server's
environment, so that what is installed there at an accepted version (torch, numpy...) is
neither downloaded nor installed again; then it installs exactly the packages that the
environment lacks, by the files the resolver chose, with ``--target`` into
``<requirements dir>/<key>``. The key hashes ``requirements.txt``, the wheels in
``code/lib/`` and the interpreter: models with identical requirements share one folder,
and a reload reuses it. The folder goes on ``sys.path`` of that model's worker only,
right after the model's ``code/``. With a ``code/lib/`` folder, pip works offline from it
(``--no-index --find-links``).

An install goes into a temporary folder that is renamed into place once pip has
succeeded, so a killed or concurrent install never leaves a half-installed folder
that a later LOAD would trust; a lock file keeps two workers from installing the
same key at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mme.errors import ModelLoadError
from mme.model_code import code_dir_of, forget_finder

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"
LIB_DIR = "lib"
COMPLETE_MARKER = ".mme-complete"
TEMP_PREFIX = ".installing-"
LOCK_POLL_S = 0.2
OUTPUT_TAIL_LINES = 15
OUTPUT_TAIL_CHARS = 3000
# Option lines of a requirements file that name requirements rather than set pip up.
_NOT_GLOBAL = frozenset({"-r", "--requirement", "-c", "--constraint", "-e", "--editable"})


class RequirementsError(ModelLoadError):
    """A model's ``code/requirements.txt`` could not be installed; the LOAD fails."""


def requirements_key(code_dir: str) -> str:
    """The name of the folder for this model's requirements (a sha256 in hex).

    Covers the requirements file, each wheel or archive in ``code/lib/`` by name and
    content (a rebuilt wheel of the same version must not reuse an old install), and
    the interpreter (a shared folder must not serve another Python's binaries).
    """
    digest = hashlib.sha256()
    digest.update(sys.implementation.cache_tag.encode() + b"\0")
    with open(os.path.join(code_dir, REQUIREMENTS_FILE), "rb") as requirements:
        digest.update(requirements.read() + b"\0")
    lib_dir = os.path.join(code_dir, LIB_DIR)
    for name in sorted(os.listdir(lib_dir)) if os.path.isdir(lib_dir) else []:
        path = os.path.join(lib_dir, name)
        if os.path.isfile(path):
            digest.update(name.encode() + b"\0" + _file_sha256(path).encode() + b"\0")
    return digest.hexdigest()


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--no-input", "--disable-pip-version-check"]


def _index_options(code_dir: str) -> list[str]:
    lib_dir = os.path.join(code_dir, LIB_DIR)
    return ["--no-index", "--find-links", lib_dir] if os.path.isdir(lib_dir) else []


def _resolve_command(code_dir: str, report: str, cache_dir: str) -> list[str]:
    # A dry run in the server's own environment: what is installed there at a version the
    # requirements accept (torch, numpy...) is left out of the report.
    return _pip(
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        report,
        "--requirement",
        os.path.join(code_dir, REQUIREMENTS_FILE),
        "--cache-dir",
        cache_dir,
        *_index_options(code_dir),
    )


def _install_command(code_dir: str, missing: str, target: str, cache_dir: str) -> list[str]:
    return _pip(
        "install",
        "--target",
        target,
        "--no-deps",
        "--no-warn-script-location",
        "--requirement",
        missing,
        "--cache-dir",
        cache_dir,
        *_index_options(code_dir),
    )


def _global_options(code_dir: str) -> list[str]:
    """The option lines of ``requirements.txt`` (index, trusted hosts): the install needs them."""
    with open(os.path.join(code_dir, REQUIREMENTS_FILE), encoding="utf-8") as requirements:
        lines = [line.strip() for line in requirements]
    return [
        line
        for line in lines
        if line.startswith("-") and re.split(r"[\s=]", line)[0] not in _NOT_GLOBAL
    ]


def _artifact(download_info: dict[str, Any]) -> str:
    """What pip installs for one entry of its report: the very file the resolver chose."""
    url = str(download_info["url"])
    vcs = download_info.get("vcs_info")
    if vcs:
        return f"{vcs['vcs']}+{url}@{vcs['commit_id']}"
    digest = download_info.get("archive_info", {}).get("hash")
    # pip checks a hash given in the URL's fragment: the file cannot change in between.
    return f"{url.split('#')[0]}#{digest}" if digest else url


@dataclass(frozen=True)
class _Install:
    """One install of a model's requirements: its scratch folder and its time limit."""

    code_dir: str
    work: str  # holds pip's cache (the resolver's downloads, reused) and the staged folder
    deadline: float
    limit_s: int

    @property
    def cache(self) -> str:
        return os.path.join(self.work, "cache")

    def pip(self, command: list[str]) -> None:
        _run_pip(command, self.code_dir, self.deadline, self.limit_s)

    def missing(self) -> str | None:
        """A requirements file of what the environment lacks, pinned to files; None if nothing."""
        report = os.path.join(self.work, "report.json")
        self.pip(_resolve_command(self.code_dir, report, self.cache))
        with open(report, encoding="utf-8") as data:
            artifacts = [
                _artifact(item["download_info"]) for item in json.load(data).get("install", [])
            ]
        logger.info(
            "code/%s needs %d package(s) that the server's environment lacks",
            REQUIREMENTS_FILE,
            len(artifacts),
        )
        if not artifacts:
            return None
        missing = os.path.join(self.work, "missing.txt")
        with open(missing, "w", encoding="utf-8") as lines:
            lines.write("\n".join([*_global_options(self.code_dir), *artifacts]) + "\n")
        return missing

    def staged(self) -> str:
        """The complete folder, ready to be moved into place."""
        staging = os.path.join(self.work, "target")
        os.mkdir(staging)
        missing = self.missing()
        if missing is not None:
            self.pip(_install_command(self.code_dir, missing, staging, self.cache))
        with open(os.path.join(staging, COMPLETE_MARKER), "w", encoding="utf-8") as marker:
            marker.write(f"{os.path.join(self.code_dir, REQUIREMENTS_FILE)}\n")
        return staging


def _pip_environment() -> dict[str, str]:
    env = dict(os.environ)
    # A PIP_USER, PIP_PREFIX or PIP_TARGET from the user's environment conflicts with --target.
    for name in ("PIP_USER", "PIP_PREFIX", "PIP_TARGET", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(name, None)
    return env


def _tail(output: str) -> str:
    lines = output.strip().splitlines()[-OUTPUT_TAIL_LINES:]
    return "\n".join(lines)[-OUTPUT_TAIL_CHARS:]


def _run_pip(command: list[str], cwd: str, deadline: float, limit_s: int) -> None:
    """Run pip until ``deadline`` (monotonic), the end of the install's ``limit_s``."""
    # A session of its own, so that a timeout also kills whatever pip started (builds).
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=_pip_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise RequirementsError(
            f"code/{REQUIREMENTS_FILE} did not install within {limit_s} s "
            f"(MME_REQUIREMENTS_TIMEOUT_SECONDS); the end of pip's output:\n"
            f"{_tail(output.decode(errors='replace'))}"
        ) from None
    if process.returncode != 0:
        raise RequirementsError(
            f"code/{REQUIREMENTS_FILE} failed to install (pip exited with "
            f"{process.returncode}); the end of pip's output:\n"
            f"{_tail(output.decode(errors='replace'))}"
        )


@contextlib.contextmanager
def _exclusive(lock_path: str, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``; the kernel drops it if the holder dies."""
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RequirementsError(
                        f"another worker has been installing these requirements for over "
                        f"{timeout_s:.0f} s (lock {lock_path})"
                    ) from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_complete(target: str) -> bool:
    return os.path.isfile(os.path.join(target, COMPLETE_MARKER))


def _remove_leftovers(root: str, key: str) -> None:
    # Called under the key's lock: any temporary folder of this key is from a dead install.
    for entry in os.listdir(root):
        if entry.startswith(f"{TEMP_PREFIX}{key}-"):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _install(code_dir: str, root: str, key: str, timeout_s: int) -> None:
    target = os.path.join(root, key)
    _remove_leftovers(root, key)
    work = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{key}-", dir=root)
    try:
        logger.info("installing code/%s into %s", REQUIREMENTS_FILE, target)
        staged = _Install(code_dir, work, time.monotonic() + timeout_s, timeout_s).staged()
        # Only a folder without the marker can be here: it never served, so replace it.
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install_requirements(model_dir: str, root: str, timeout_s: int) -> str | None:
    """Install the model's ``code/requirements.txt`` unless done already; return its folder.

    Returns None when the model ships no requirements file. Raises RequirementsError,
    which fails the LOAD, when pip fails, runs out of time, or the folder is unusable.
    """
    code_dir = code_dir_of(model_dir)
    if not os.path.isfile(os.path.join(code_dir, REQUIREMENTS_FILE)):
        return None
    key = requirements_key(code_dir)
    target = os.path.join(root, key)
    if _is_complete(target):
        return target
    try:
        os.makedirs(root, exist_ok=True)
        # Waiting for another worker's install may take as long as that install may.
        with _exclusive(os.path.join(root, f"{key}.lock"), timeout_s):
            if not _is_complete(target):
                _install(code_dir, root, key, timeout_s)
    except OSError as exc:
        raise RequirementsError(
            f"cannot install code/{REQUIREMENTS_FILE} into {root} (MME_REQUIREMENTS_DIR): {exc}"
        ) from exc
    return target


def activate_requirements(model_dir: str, root: str, timeout_s: int) -> str | None:
    """Install the model's requirements and put their folder right after its ``code/``.

    The order on ``sys.path`` is the model's own code, then its requirements, then the
    rest (site-packages). Returns the folder, or None when there are no requirements.
    """
    target = install_requirements(model_dir, root, timeout_s)
    if target is None:
        return None
    _warn_of_shadowed_modules(target)
    while target in sys.path:
        sys.path.remove(target)
    code_dir = code_dir_of(model_dir)
    position = sys.path.index(code_dir) + 1 if code_dir in sys.path else 0
    sys.path.insert(position, target)
    forget_finder(target)  # the folder may be new since the last import looked
    return target


def _warn_of_shadowed_modules(target: str) -> None:
    # A module the worker has imported already (from the server's environment, or the
    # prefork parent's) stays the one in use: the model's own version would not be.
    shadowed = sorted(
        name
        for name in (entry.removesuffix(".py") for entry in os.listdir(target))
        if name in sys.modules
    )
    if shadowed:
        logger.warning(
            "code/%s installs %s, which this worker has imported already from the server's "
            "environment: the model will use the server's version",
            REQUIREMENTS_FILE,
            ", ".join(shadowed),
        )
