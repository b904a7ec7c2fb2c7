"""What one process holds, read straight from /proc: threads, open files, memory.

Straight from /proc rather than through psutil: thousands of processes are read in seconds.
"""

from __future__ import annotations

import os
import re
from collections import Counter

MIB = 1024 * 1024
MMS_WORKER_THREADS = "W-*"  # MMS names each worker's Java threads W-<port>-<model>
_TRAILING_DIGITS = re.compile(r"\d+$")


def thread_groups(pid: int) -> dict[str, int]:
    """Threads of ``pid`` by name, digits at the end dropped (``GC Thread#1`` -> ``GC Thread#``)."""
    groups: Counter[str] = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
        except OSError:
            continue  # the thread ended while we looked
        groups[MMS_WORKER_THREADS if name.startswith("W-") else _TRAILING_DIGITS.sub("", name)] += 1
    return dict(sorted(groups.items()))


def fd_groups(pid: int) -> dict[str, int]:
    """Open fds of ``pid`` by target: ``socket``, ``pipe``, ``anon_inode:[eventpoll]``, or
    the file's path."""
    groups: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            target = target.split(":")[0]
        groups[target] += 1
    return dict(sorted(groups.items()))


def smaps_rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes by field (``Rss``, ``Pss``, ``Private_Dirty``...)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"kB":
                fields[parts[0].rstrip(b":").decode()] = int(parts[1]) * 1024
    return fields


def memory_mib(pid: int) -> dict[str, float]:
    """USS (private pages: what its exit would free), its dirty part, and RSS of ``pid``, in
    MiB. The clean part of USS is mostly shared libraries' pages that no other process maps
    at the moment: it moves when any other process on the machine maps the same library
    (torch), so the dirty part is the steadier measure of what a process allocated."""
    fields = smaps_rollup(pid)
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {
        "uss_mib": round(uss / MIB, 1),
        "private_dirty_mib": round(fields.get("Private_Dirty", 0) / MIB, 1),
        "rss_mib": round(fields.get("Rss", 0) / MIB, 1),
    }
