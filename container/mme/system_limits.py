"""What the kernel lets this container have, and what is in use: read from /proc and /sys.

Each reader returns None when the system does not say (no such file, no such controller):
a limit that cannot be read is no limit the server can plan for.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource

UNLIMITED_CGROUP = 2**62  # cgroup v1 writes "no limit" as a number this large, or larger


def raise_soft_limits() -> dict[str, tuple[int, int]]:
    """Raise the soft limits of open files and of processes to their hard limits, as an
    unprivileged process may; return those raised (name: (before, after)).

    Children (MMS's Java, the zygote and every worker) inherit them.
    """
    raised = {}
    for name, which in (
        ("RLIMIT_NOFILE", resource.RLIMIT_NOFILE),
        ("RLIMIT_NPROC", resource.RLIMIT_NPROC),
    ):
        soft, hard = resource.getrlimit(which)
        if soft != hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (hard, hard))
                raised[name] = (soft, hard)
    return raised


def soft_limit(which: int) -> int | None:
    """A resource limit of this process (``resource.RLIMIT_*``); None when unlimited."""
    soft, _hard = resource.getrlimit(which)
    return None if soft == resource.RLIM_INFINITY else soft


def nproc_applies() -> bool:
    """Whether RLIMIT_NPROC binds this process: Linux exempts root of the initial user
    namespace (a container's root without user-namespace remapping)."""
    if os.geteuid() != 0:
        return True
    mapping = _read("/proc/self/uid_map")
    return mapping is None or mapping.split() != ["0", "0", "4294967295"]


def sysctl(name: str) -> int | None:
    """A kernel setting such as ``kernel/pid_max``."""
    return _number(_read(f"/proc/sys/{name}"))


def tasks_on_system() -> int | None:
    """Threads and processes that exist on the whole machine (/proc/loadavg): what
    kernel.pid_max and kernel.threads-max count."""
    text = _read("/proc/loadavg")
    with contextlib.suppress(AttributeError, IndexError, ValueError):
        return int(text.split()[3].split("/")[1])  # type: ignore[union-attr]
    return None


def tasks_of_user() -> int:
    """Threads of this process's user that this process can see (what RLIMIT_NPROC counts,
    in this PID namespace)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
    return count


def cgroup_pids() -> tuple[int, int] | None:
    """This cgroup's task limit and its tasks now (pids.max, pids.current), when limited."""
    limit = _cgroup_value("pids", "pids.max", "pids.max")
    current = _cgroup_value("pids", "pids.current", "pids.current")
    if limit is None or current is None:
        return None
    return limit, current


def available_memory() -> int | None:
    """Bytes that the next model can still have: the lesser of the machine's available
    memory and what this cgroup's limit leaves (page cache that can be dropped counts as
    free in both)."""
    meminfo = _read("/proc/meminfo") or ""
    machine = next(
        (
            int(line.split()[1]) * 1024
            for line in meminfo.splitlines()
            if line.startswith("MemAvailable:")
        ),
        None,
    )
    limit = _cgroup_value("memory", "memory.limit_in_bytes", "memory.max")
    usage = _cgroup_value("memory", "memory.usage_in_bytes", "memory.current")
    if limit is None or usage is None:
        return machine
    stats = _cgroup_text("memory", "memory.stat", "memory.stat") or ""
    inactive = next(
        (
            int(line.split()[1])
            for line in stats.splitlines()
            if line.split()[:1] in (["total_inactive_file"], ["inactive_file"])
        ),
        0,
    )
    left = max(0, limit - max(0, usage - inactive))
    return left if machine is None else min(machine, left)


def open_fds(pid: int) -> int | None:
    """How many files process ``pid`` has open."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def memory_maps(pid: int) -> int | None:
    """How many memory mappings process ``pid`` has (what vm.max_map_count limits)."""
    text = _read(f"/proc/{pid}/maps")
    return None if text is None else text.count("\n")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as source:
            return source.read()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    with contextlib.suppress(AttributeError, ValueError):
        value = int(text.strip())  # type: ignore[union-attr]
        return None if value >= UNLIMITED_CGROUP else value
    return None  # absent, or "max" (cgroup v2's no limit)


def _cgroup_value(controller: str, v1_file: str, v2_file: str) -> int | None:
    return _number(_cgroup_text(controller, v1_file, v2_file))


@functools.cache
def _cgroup_paths() -> dict[str, str]:
    """This process's cgroup path per controller list ("" for v2's unified tree); a process
    stays in its cgroup, so /proc/self/cgroup is read once."""
    paths = {}
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        _hierarchy, controllers, path = line.split(":", 2)
        paths[controllers] = path
    return paths


def _cgroup_text(controller: str, v1_file: str, v2_file: str) -> str | None:
    """A file of this process's cgroup: v2's unified tree, or v1's ``controller`` tree; in
    the cgroup's own folder, or the mount's root (a container sees its cgroup there)."""
    paths = _cgroup_paths()
    candidates = []
    if "" in paths:
        candidates += [f"/sys/fs/cgroup{paths['']}/{v2_file}", f"/sys/fs/cgroup/{v2_file}"]
    v1_path = next((path for names, path in paths.items() if controller in names.split(",")), None)
    if v1_path is not None:
        candidates += [
            f"/sys/fs/cgroup/{controller}{v1_path}/{v1_file}",
            f"/sys/fs/cgroup/{controller}/{v1_file}",
        ]
    for candidate in candidates:
        text = _read(os.path.normpath(candidate))
        if text is not None:
            return text
    return None
