"""Snapshots from /proc: the server's process tree, threads, file descriptors and memory.

A census counts the processes under `mme serve` (and `mme endpoint`) by kind, and for each
long-lived process (the endpoint, `mme serve`, the Java frontend, the zygote) its threads
grouped by name, its open file descriptors grouped by what they point at, and its USS and
RSS. :func:`leaks` compares two censuses taken at the same quiet point (no model loaded).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from harness.proc import MMS_WORKER_THREADS, fd_groups, memory_mib, thread_groups
from harness.processes import cmdline, descendants, model_processes

LONG_LIVED = ("endpoint", "serve", "java", "zygote")
WORKER_KINDS = ("launcher", "worker", "worker-child")
# Thread pools that the JVM and Netty start lazily up to a fixed bound and never shrink
# (JIT compiler, GC, event loops): they can grow once after the warm-up without leaking, so
# they are reported but not judged. Everything else must not grow.
BOUNDED_JAVA_GROUPS = (
    "C1 CompilerThre",
    "C2 CompilerThre",
    "GC Thread#",
    "G1 Conc#",
    "G1 Refine#",
    "epollEventLoopG",
    "nioEventLoopGro",
)
JCMD_TIMEOUT_S = 60
_HEAP_USED = re.compile(r"heap\s+total \d+K, used (\d+)K")


@dataclass
class Census:
    """What ran and what it held at one moment."""

    processes: dict[str, int]
    pids: dict[str, list[int]]
    threads: dict[str, dict[str, int]] = field(default_factory=dict)
    fds: dict[str, dict[str, int]] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    java_collected: bool = False  # a full GC ran just before Java's memory was read

    def total(self, what: str, role: str) -> int:
        """The number of threads or fds (``what``) that ``role`` held."""
        return sum(getattr(self, what).get(role, {}).values())

    def to_json(self) -> dict[str, Any]:
        """The census as plain data."""
        return asdict(self)


def take_census(serve_pid: int, endpoint_pid: int) -> Census:
    """Count the processes under both servers and read each long-lived one's resources."""
    kinds: dict[str, list[int]] = {}
    for pid, kind in _classified(serve_pid, "serve") + _classified(endpoint_pid, "endpoint"):
        kinds.setdefault(kind, []).append(pid)
    census = Census(
        {kind: len(pids) for kind, pids in sorted(kinds.items())},
        {kind: sorted(pids) for kind, pids in sorted(kinds.items())},
    )
    for role in LONG_LIVED:
        for pid in kinds.get(role, [])[:1]:
            try:
                census.threads[role] = thread_groups(pid)
                census.fds[role] = fd_groups(pid)
                census.memory[role] = memory_mib(pid)
            except OSError:  # it exited meanwhile: the process counts show that
                continue
    return census


def _classified(root_pid: int, root_kind: str) -> list[tuple[int, str]]:
    try:
        root = psutil.Process(root_pid)
        found = [(root_pid, root_kind)]
        kinds = {root_pid: root_kind}
        for process in root.children(recursive=True):
            kind = _kind(process, kinds.get(_parent_pid(process), ""))
            kinds[process.pid] = kind
            found.append((process.pid, kind))
    except psutil.NoSuchProcess:
        return []
    return found


def _parent_pid(process: psutil.Process) -> int:
    try:
        return int(process.ppid())
    except psutil.Error:
        return 0


def _kind(process: psutil.Process, parent_kind: str) -> str:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return "zombie"
        args = [arg for arg in process.cmdline() if arg]
    except psutil.Error:
        return "gone"
    if args and os.path.basename(args[0]) == "java":
        return "java"
    if "mme.prefork.zygote" in args:
        return "zygote"
    if any(arg.endswith("python-prefork") for arg in args):
        return "launcher"
    if any(arg.endswith("model_service_worker.py") for arg in args):
        # MMS's worker forks a child per connection from the frontend; that child serves.
        return "worker-child" if parent_kind in ("worker", "worker-child") else "worker"
    return "other"


def private_dirty_mib(pids: dict[str, list[int]]) -> dict[str, float]:
    """Each long-lived process's private dirty memory now (MiB), by role; cheap enough to
    follow during the traffic."""
    sample = {}
    for role in LONG_LIVED:
        for pid in pids.get(role, [])[:1]:
            try:
                sample[role] = memory_mib(pid)["private_dirty_mib"]
            except OSError:
                continue
    return sample


def collect_java_garbage(census: Census) -> Census:
    """Run a full GC in the Java frontend with ``jcmd`` (when there is one), then read its
    memory again: without it the heap's size says when the GC last ran, not what is live.

    The first call starts the JVM's attach listener (a thread and a socket, for good): make
    it before the first census that is compared."""
    pid = census.pids.get("java", [0])[0]
    jcmd = shutil.which("jcmd")
    if not pid or jcmd is None:
        return census
    try:
        ran = (
            subprocess.run(
                [jcmd, str(pid), "GC.run"], capture_output=True, timeout=JCMD_TIMEOUT_S, check=False
            ).returncode
            == 0
        )
        if ran:
            census.memory["java"] = memory_mib(pid)
            census.java_collected = True
            heap = subprocess.run(
                [jcmd, str(pid), "GC.heap_info"],
                capture_output=True,
                text=True,
                timeout=JCMD_TIMEOUT_S,
                check=False,
            ).stdout
            used = _HEAP_USED.search(heap)
            if used:  # what is live: the heap's committed size lags behind it
                census.memory["java"]["heap_used_mib"] = round(int(used.group(1)) / 1024, 1)
    except (OSError, subprocess.TimeoutExpired):
        pass  # a JRE without attach: report the memory as it was
    return census


def worker_memory_mib(serve_pid: int, model_id: str) -> dict[int, dict[str, float]]:
    """Each live worker of ``model_id`` by pid: USS and RSS of it and its per-connection
    children together (the child holds the model)."""
    workers: dict[int, dict[str, float]] = {}
    serving = [
        process
        for process in model_processes(descendants(serve_pid), model_id)
        if _python_worker(cmdline(process))
    ]
    for process in serving:
        try:
            if process.parent() in serving:
                continue  # the child of a stock worker, counted with it
            members = [process, *process.children(recursive=True)]
            totals = [memory_mib(member.pid) for member in members]
        except (psutil.Error, OSError):
            continue  # unloaded while we looked
        workers[process.pid] = {key: round(sum(t[key] for t in totals), 1) for key in totals[0]}
    return workers


def _python_worker(args: list[str]) -> bool:
    # A prefork launcher carries the worker's arguments too, but it is no worker.
    return any(arg.endswith("model_service_worker.py") for arg in args) and not any(
        arg.endswith("python-prefork") for arg in args
    )


def quiet(census: Census) -> bool:
    """Whether no worker, launcher or zombie is left."""
    return not any(census.processes.get(kind) for kind in (*WORKER_KINDS, "zombie"))


def leaks(before: Census, after: Census) -> list[str]:
    """What ``after`` holds that ``before`` did not: processes, threads, fds. Both must be
    taken with no model loaded."""
    problems = []
    if after.processes != before.processes:
        problems.append(f"processes: {before.processes} then {after.processes}")
    if after.processes.get("zombie"):
        problems.append(f"{after.processes['zombie']} zombie processes")
    for role in LONG_LIVED:
        if role not in before.threads:
            continue
        problems += _grown(
            f"{role} threads",
            before.threads[role],
            after.threads.get(role, {}),
            BOUNDED_JAVA_GROUPS if role == "java" else (),
        )
        problems += _grown(f"{role} fds", before.fds[role], after.fds.get(role, {}), ())
    # An idle MMS worker thread ends 60 s after its worker did; one still there after the
    # settling wait belongs to no worker (none is loaded now): a leak, whatever came before.
    java_workers = after.threads.get("java", {}).get(MMS_WORKER_THREADS, 0)
    if java_workers:
        problems.append(
            f"java: {java_workers} MMS worker threads ({MMS_WORKER_THREADS}) with no worker loaded"
        )
    return problems


def _grown(
    what: str, before: dict[str, int], after: dict[str, int], exempt: tuple[str, ...]
) -> list[str]:
    grown = {
        group: (before.get(group, 0), count)
        for group, count in after.items()
        if count > before.get(group, 0) and group not in exempt and group != MMS_WORKER_THREADS
    }
    return (
        [
            f"{what}: "
            + ", ".join(f"{group!r} {was} -> {now}" for group, (was, now) in grown.items())
        ]
        if grown
        else []
    )
