"""mme.capacity and mme.system_limits: what each limit allows, and when a LOAD is refused."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys

import pytest

from mme import system_limits
from mme.capacity import Capacity, PerModel, bound

MIB = 1024 * 1024


def test_a_model_costs_mms_seven_threads_and_six_files_and_prefork_two_processes() -> None:
    prefork, stock = PerModel(1, prefork=True), PerModel(2, prefork=False)
    assert (prefork.java_threads, prefork.java_fds, prefork.java_maps) == (7, 6, 14)
    assert (prefork.zygote_fds, prefork.tasks) == (5, 10)  # MMS's 7, the stand-in, 2 threads
    assert (stock.java_threads, stock.zygote_fds, stock.tasks) == (10, 0, 17)
    shared = PerModel(3, prefork=True, share=True)  # one process: 3 threads, 1 per more worker
    assert (shared.java_threads, shared.zygote_fds, shared.tasks) == (13, 6, 13 + 1 + 3 + 2)


def test_a_limit_allows_what_fits_beside_what_is_used_with_a_tenth_kept_back() -> None:
    found = bound("RLIMIT_NOFILE", "open files of MMS", 1000, 100, 6)
    assert found is not None
    assert found.models == (900 - 100) // 6
    assert found.describe() == "RLIMIT_NOFILE (1,000 open files of MMS, 6 per model): 133"
    assert bound("pids.max", "tasks", None, 5, 10) is None  # no such limit
    full = bound("RLIMIT_NOFILE", "files", 100, 95, 6)
    assert full is not None and full.models == 0


def _capacity(max_models: int = 0, min_available_mib: int = 0) -> Capacity:
    found = Capacity(PerModel(1, prefork=True), max_models, min_available_mib * MIB)
    found.measure(os.getpid(), os.getpid())
    return found


async def _load(found: Capacity, name: str, succeeds: bool = True) -> str | None:
    async with found.place(name) as place:
        if place.refusal is None:
            place.loaded = succeeds
        return place.refusal


def test_the_server_says_what_each_limit_allows_and_the_maximum_comes_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="mme.capacity"):
        found = _capacity(max_models=3)
    assert found.most is not None and found.most.name == "MME_MAX_LOADED_MODELS"
    names = {b.name for b in found.bounds}
    assert {"RLIMIT_NOFILE", "kernel.pid_max", "vm.max_map_count"} <= names
    assert "capacity: up to 3 models (MME_MAX_LOADED_MODELS)" in caplog.text
    assert "RLIMIT_NOFILE" in caplog.text and "per model" in caplog.text


def test_a_load_past_the_maximum_is_refused_until_a_model_is_unloaded() -> None:
    found = _capacity(max_models=2)

    async def scenario() -> list[str | None]:
        results = [await _load(found, "a"), await _load(found, "b"), await _load(found, "c")]
        results.append(await _load(found, "a"))  # loaded already: MMS answers (409)
        found.release("a")
        results.append(await _load(found, "c"))
        return results

    first, second, refused, again, after_unload = asyncio.run(scenario())
    assert first is second is again is after_unload is None
    assert refused is not None
    assert "holds 2 models, as many as MME_MAX_LOADED_MODELS allows" in refused
    assert found.loaded == {"b", "c"}


def test_a_failed_load_gives_its_place_back_and_loads_in_flight_count() -> None:
    found = _capacity(max_models=1)

    async def scenario() -> tuple[str | None, str | None, str | None]:
        failed = await _load(found, "a", succeeds=False)
        async with found.place("b") as loading:  # b loads while c asks
            refused = await _load(found, "c")
            loading.loaded = True
        return failed, refused, await _load(found, "c")

    failed, refused_while_b_loads, after_b = asyncio.run(scenario())
    assert failed is None and refused_while_b_loads is not None and after_b is not None
    assert found.loaded == {"b"} and not found.loading


def test_a_load_that_would_leave_too_little_memory_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = _capacity(min_available_mib=256)
    monkeypatch.setattr(system_limits, "available_memory", lambda: 100 * MIB)
    refusal = asyncio.run(_load(found, "a"))
    assert refusal is not None and "only 100 MiB of memory is available" in refusal
    assert "MME_MIN_AVAILABLE_MEMORY_MB (256)" in refusal
    monkeypatch.setattr(system_limits, "available_memory", lambda: 300 * MIB)
    assert asyncio.run(_load(found, "a")) is None


def test_the_memory_available_is_read_from_the_machine() -> None:
    available = system_limits.available_memory()
    assert available is not None and 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )


LOWERED = """
import logging, resource, sys
from mme import capacity
logging.basicConfig(level=logging.INFO)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
capacity.raise_limits()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print(soft == hard)
"""


def test_the_soft_limit_of_open_files_is_raised_to_the_hard_one() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256
    result = subprocess.run(
        [sys.executable, "-c", LOWERED], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "True"
    assert f"raised RLIMIT_NOFILE from 256 to {hard}" in result.stderr
