"""What a server's processes hold, by role: counts, threads, open files, private memory.

Roles: ``serve`` (`mme serve` and its gateway), ``java`` (MMS), ``zygote`` (prefork),
``standin`` (what MMS starts per model in prefork mode), ``backend`` (what it starts in
stock mode), ``worker`` (the process that holds a model). Read straight from /proc: two
thousand processes are read in a few seconds.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import psutil

from harness.proc import MIB, smaps_rollup
from harness.processes import cmdline, descendants, model_name

ROLES = ("serve", "java", "zygote", "standin", "backend", "worker")


@dataclass
class Holdings:
    """The sum over one role's processes."""

    processes: int = 0
    threads: int = 0
    fds: int = 0
    uss_mib: float = 0.0
    pss_mib: float = 0.0
    maps: int = 0

    def add(self, pid: int) -> None:
        """Count process ``pid`` in (one that exited meanwhile counts as nothing)."""
        try:
            rollup = smaps_rollup(pid)
            threads = len(os.listdir(f"/proc/{pid}/task"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/maps", "rb") as maps:
                mappings = maps.read().count(b"\n")
        except OSError:
            return
        self.processes += 1
        self.threads += threads
        self.fds += fds
        self.uss_mib += (rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)) / MIB
        self.pss_mib += rollup.get("Pss", 0) / MIB
        self.maps += mappings


@dataclass
class Census:
    """Every role's holdings at one moment."""

    roles: dict[str, Holdings] = field(default_factory=lambda: {r: Holdings() for r in ROLES})

    def total(self, what: str) -> float:
        """``what`` (a field of Holdings) over every role."""
        return float(sum(getattr(h, what) for h in self.roles.values()))

    def to_json(self) -> dict[str, object]:
        """The census as plain data, with the totals."""
        return {
            "roles": {role: asdict(h) for role, h in self.roles.items()},
            **{
                f"total_{what}": round(self.total(what), 1)
                for what in ("processes", "threads", "fds", "uss_mib", "pss_mib")
            },
        }


def take(serve_pid: int) -> Census:
    """The census of `mme serve` ``serve_pid`` and everything under it."""
    census = Census()
    census.roles["serve"].add(serve_pid)
    tree = descendants(serve_pid)
    args = {process.pid: cmdline(process) for process in tree}
    java = next((pid for pid, a in args.items() if a and os.path.basename(a[0]) == "java"), 0)
    for process in tree:
        role = _role(args[process.pid], process, java)
        if role is not None:
            census.roles[role].add(process.pid)
    return census


def _role(args: list[str], process: psutil.Process, java: int) -> str | None:
    if not args:
        return None
    if os.path.basename(args[0]) == "java":
        return "java"
    if "mme.prefork.zygote" in args:
        return "zygote"
    if model_name(args) is None:
        return None  # setpriv on its way to exec, MMS's metrics collector
    if os.path.basename(args[0]) == "sh":
        return "standin"
    # A stock backend is MMS's child and forks the worker; a prefork worker is the zygote's.
    try:
        return "backend" if process.ppid() == java else "worker"
    except psutil.Error:
        return None
