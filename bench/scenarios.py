"""The measurements, each against one running server: cold LOADs, latency, throughput, memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.memory import memory_mib, wait_gone
from bench.models import TORCHSCRIPT_WARM_UP_CALLS
from bench.server import BenchServer
from bench.stats import latency

JPEG = "image/jpeg"
JSON = "application/json"
UNLOAD_GONE_S = 30.0
BLOCK = 10
# Java compiles MMS's request path only after some thousand requests: before that each
# request costs milliseconds more than it will for the rest of the server's life.
JIT_WARM_UP_REQUESTS = 2000


@dataclass(frozen=True)
class Payload:
    """What one model is invoked with."""

    body: bytes
    content_type: str


def cold_load(server: BenchServer, name: str, url: Path, payload: Payload) -> dict[str, float]:
    """LOAD a model, invoke it once, UNLOAD it: the seconds of the LOAD and of the first invoke."""
    load_s = server.load(name, url)
    first_s = server.invoke(name, payload.body, payload.content_type)
    server.unload(name)
    return {"load_s": load_s, "first_invoke_s": first_s}


def warm_latency(
    targets: dict[str, Callable[[], float]], count: int
) -> dict[str, dict[str, float]]:
    """p50/p99 of ``count`` sequential calls of each target, in blocks of BLOCK calls.

    The targets take turns block by block, so that whatever else the machine does slows
    every target alike, while each block runs back to back as one client's calls would
    (a turn per call would have each target start while the previous one's OpenMP
    threads still spin).
    """
    for call in targets.values():
        for _ in range(TORCHSCRIPT_WARM_UP_CALLS):
            call()
    timings: dict[str, list[float]] = {label: [] for label in targets}
    for _ in range(0, count, BLOCK):
        for label, call in targets.items():
            timings[label] += [call() for _ in range(BLOCK)]
    return {label: latency(values) for label, values in timings.items()}


def warm_up_jit(
    server: BenchServer, name: str, payload: Payload, requests_count: int = JIT_WARM_UP_REQUESTS
) -> None:
    """Invoke ``name`` ``requests_count`` times, so that Java has compiled the request path."""
    with requests.Session() as session:
        for _ in range(requests_count):
            server.invoke(name, payload.body, payload.content_type, session)


def throughput(
    server: BenchServer, names: Sequence[str], payload: Payload, clients: int, duration_s: float
) -> dict[str, Any]:
    """Requests per second and latency with ``clients`` keep-alive clients for ``duration_s``.

    Client ``i`` invokes model ``names[i % len(names)]``, so the clients are spread evenly
    over the models; ``per_model_rps`` says how evenly each model was served.
    """
    timings: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    deadline = time.monotonic() + duration_s

    def client(index: int) -> None:
        with requests.Session() as session:
            try:
                while time.monotonic() < deadline:
                    timings[index].append(
                        server.invoke(
                            names[index % len(names)], payload.body, payload.content_type, session
                        )
                    )
            except Exception as exc:  # reported after the run, not lost in a thread
                errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    done = [t for per_client in timings for t in per_client]
    per_model = [
        sum(len(timings[i]) for i in range(index, clients, len(names))) / elapsed
        for index in range(len(names))
    ]
    return {
        "clients": clients,
        "models": len(names),
        "rps": len(done) / elapsed,
        **latency(done),
        "per_model_rps": per_model,
    }


def memory_budget(
    server: BenchServer, url: Path, payload: Payload, budget_mib: float, limit: int
) -> dict[str, Any]:
    """Load copies of one model until the server's USS would pass ``budget_mib``; unload them.

    Each copy is invoked once, so that it holds what serving needs. The server's fixed
    processes (Java, and the zygote in prefork mode) count against the budget too.
    """
    fixed = memory_mib(server.fixed_processes())
    used = fixed["uss_mib"]
    per_model: list[dict[str, float]] = []
    names: list[str] = []
    while len(names) < limit:
        name = f"budget-{len(names)}"
        server.load(name, url)
        server.invoke(name, payload.body, payload.content_type)
        names.append(name)
        per_model.append(memory_mib(server.model_processes(name)))
        used = memory_mib(server.fixed_processes())["uss_mib"] + sum(
            m["uss_mib"] for m in per_model
        )
        if used > budget_mib:
            break
    fitted = len(names) - 1 if used > budget_mib else len(names)
    unloads = [_unload_and_measure(server, name) for name in names]
    return {
        "fixed": fixed,
        "per_model": per_model,
        "models_in_budget": fitted,
        "hit_limit": used <= budget_mib,
        "unload": unloads,
    }


def _unload_and_measure(server: BenchServer, name: str) -> dict[str, float]:
    processes = server.model_processes(name)
    held = memory_mib(processes)
    unload_s = server.unload(name)
    started = time.monotonic()
    gone = wait_gone(processes, UNLOAD_GONE_S)
    return {
        "unload_s": unload_s,
        "processes_gone_s": unload_s + time.monotonic() - started,
        "uss_freed_mib": held["uss_mib"] if gone else 0.0,
        "all_gone": float(gone),
    }
