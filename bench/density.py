"""The density benchmark: many tiny models in one `mme serve`, and what each one costs.

A tiny model is a 16x4 ``torch.nn.Linear`` state_dict with the ``inference.py`` that
builds it (harness/models.py). One server per worker mode loads tiny models one
after another, each invoked once as it loads, up to each checkpoint (1, 10, 50... models);
at each checkpoint it records a census of the server's processes (bench/census.py), the
LOAD p50 of the models loaded since the last checkpoint, and the warm invoke p50 over the
loaded models, taken in turn. Then it unloads every model. MMS's stock workers hold a
fresh interpreter each (hundreds of MiB): they go to a few models only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from bench import census, density_report, report
from bench.scenarios import JSON, Payload, warm_up_jit
from bench.server import BenchServer, mme_serve
from bench.stats import latency, percentile
from harness.models import make_tiny_model

CHECKPOINTS = (1, 10, 50, 100, 250, 500, 1000, 2000)
STOCK_MODELS = 8
WARM_INVOKES = 300  # per checkpoint, over the loaded models in turn
SETTLE_S = 5.0  # after the last UNLOAD, for MMS to reap what it killed
PAYLOAD = Payload(json.dumps([[float(i % 5) for i in range(16)]]).encode(), JSON)


@dataclass(frozen=True)
class DensityOptions:
    """How far each mode goes."""

    models: int  # prefork workers
    stock_models: int = STOCK_MODELS  # MMS's stock workers (0: none)


def checkpoints(limit: int) -> list[int]:
    """The model counts measured on the way to ``limit``."""
    return [n for n in CHECKPOINTS if n < limit] + [limit]


def benchmark(options: DensityOptions, root: Path, out_dir: Path, note: str) -> list[Path]:
    """Run both modes under ``root``; write density.json, .md and .png under ``out_dir``."""
    started = time.monotonic()
    results = {
        "machine": report.machine(),
        "revision": report.revision(),
        "environment": report.environment(),
        "options": asdict(options),
        "note": note,
        **run(options, root),
    }
    results["seconds"] = time.monotonic() - started
    return density_report.write(results, out_dir)


def run(options: DensityOptions, root: Path) -> dict[str, Any]:
    """Both modes, one after the other; the results as plain data."""
    tiny = make_tiny_model(root / "models" / "tiny" / "model")
    modes = {"prefork": options.models, "stock": options.stock_models}
    return {
        "checkpoints": CHECKPOINTS,
        "warm_invokes": WARM_INVOKES,
        "modes": {
            mode: _mode(mode, limit, root, tiny) for mode, limit in modes.items() if limit > 0
        },
    }


def _mode(mode: str, limit: int, root: Path, tiny: Path) -> dict[str, Any]:
    server = mme_serve(mode, root / "models", root, "density")
    started = time.monotonic()
    result: dict[str, Any] = {"points": [], "error": None}
    names: list[str] = []
    try:
        result["start"] = server.start()
        # Java compiles MMS's request path over the first thousands of requests.
        server.load("warm-up", tiny)
        warm_up_jit(server, "warm-up", PAYLOAD)
        server.unload("warm-up")
        result["idle"] = _census(server)
        for target in checkpoints(limit):
            result["points"].append(_load_up_to(server, target, tiny, names))
            print(f"  density {mode}: {_summary(result['points'][-1])}", flush=True)
        unloads = [server.unload(name) for name in names]
        result["unload"] = latency(unloads) if unloads else None
        time.sleep(SETTLE_S)
        result["after_unload"] = _census(server)
    except (RuntimeError, requests.RequestException) as exc:  # reported, not raised
        result["error"] = f"{exc} (with {len(names)} models loaded)"
        print(f"  density {mode}: {result['error']}", flush=True)
    finally:
        server.stop()
    result["seconds"] = time.monotonic() - started
    return result


def _load_up_to(server: BenchServer, target: int, tiny: Path, names: list[str]) -> dict[str, Any]:
    loads, first_invokes = [], []
    while len(names) < target:
        name = f"tiny-{len(names)}"
        loads.append(server.load(name, tiny))
        names.append(name)
        first_invokes.append(server.invoke(name, PAYLOAD.body, PAYLOAD.content_type))
    warm = [
        server.invoke(names[i % len(names)], PAYLOAD.body, PAYLOAD.content_type)
        for i in range(WARM_INVOKES)
    ]
    return {
        "models": target,
        "loads": len(loads),
        "load_p50_s": percentile(loads, 0.5),
        "load_p90_s": percentile(loads, 0.9),
        "first_invoke": latency(first_invokes),
        "warm_invoke": latency(warm),
        "census": _census(server),
    }


def _census(server: BenchServer) -> dict[str, Any]:
    process = getattr(server.native, "process", None)
    assert process is not None, "the server runs"
    return census.take(process.pid).to_json()


def _summary(point: dict[str, Any]) -> str:
    taken = point["census"]
    return (
        f"{point['models']} models: LOAD p50 {point['load_p50_s']:.3f} s, warm invoke "
        f"p50 {point['warm_invoke']['p50_ms']:.1f} ms, {taken['total_processes']:.0f} "
        f"processes, {taken['total_threads']:.0f} threads, USS "
        f"{taken['total_uss_mib']:.0f} MiB"
    )
