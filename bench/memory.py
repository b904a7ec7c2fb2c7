"""Private (USS) and proportional (PSS) memory of a set of processes, in MiB."""

from __future__ import annotations

import psutil

from harness.processes import alive

MIB = 1024 * 1024


def memory_mib(processes: list[psutil.Process]) -> dict[str, float]:
    """Summed USS and PSS of ``processes`` (those gone meanwhile count as nothing)."""
    uss = pss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        uss += info.uss
        pss += info.pss
    return {"uss_mib": uss / MIB, "pss_mib": pss / MIB}


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    """Whether every process in ``processes`` exited (or became a zombie) within ``timeout_s``."""
    _gone, left = psutil.wait_procs(processes, timeout=timeout_s)
    return not any(alive(p) for p in left)
