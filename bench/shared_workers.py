"""What a model's second worker costs: one ResNet-18 with 1 worker, 2 workers sharing one
copy of it (the default), and 2 workers each with its own (MME_WORKERS_SHARE_MODEL=off).

Each server loads the model, then serves keep-alive clients for a while, so that every
worker has computed (a worker's memory grows with its first requests); the model's
processes are measured then (USS: what they hold alone; PSS: shared pages shared out).
Throughput under the same clients is reported beside, to show what the sharing costs in
speed, if anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report
from bench.memory import memory_mib
from bench.scenarios import Payload, throughput
from bench.server import mme_serve

CONFIGS = {
    "1 worker": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
    "2 workers, shared": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    "2 workers, separate": {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "MME_WORKERS_SHARE_MODEL": "off",
    },
}
CLIENTS = 16
GOAL = 0.25  # a second worker costs at most this share of the first one's private memory
STAGES = ("loaded", "warm", "busy")


def benchmark(
    root: Path, url: Path, image: Payload, seconds: float, out_dir: Path, note: str
) -> list[Path]:
    """Measure under ``root``; write shared-workers.json and .md under ``out_dir``."""
    return report.measure_and_write(
        lambda: {
            "clients": CLIENTS,
            "seconds_per_run": seconds,
            "configs": {
                label: _measure(root, label, env, url, image, seconds)
                for label, env in CONFIGS.items()
            },
        },
        note,
        out_dir,
        "shared-workers",
        markdown,
    )


def _measure(
    root: Path, label: str, env: dict[str, str], url: Path, image: Payload, seconds: float
) -> dict[str, Any]:
    print(f"shared workers: {label} ...", flush=True)
    workers = int(env["SAGEMAKER_MODEL_SERVER_WORKERS"])
    server = mme_serve("prefork", root / "models", root, label.replace(", ", "-"), env)
    try:
        server.start()
        server.load("r18", url)
        processes = server.model_processes("r18")
        loaded = memory_mib(processes)
        # As many clients as workers: each worker computes, a request at a time.
        throughput(server, ["r18"], image, workers, seconds)
        warm = memory_mib(processes)
        throughput(server, ["r18"], image, CLIENTS, seconds)
        run = throughput(server, ["r18"], image, CLIENTS, seconds)
        busy = memory_mib(processes)
        return {
            "processes": len(processes),
            "loaded": loaded,
            "warm": warm,
            "busy": busy,
            "rps": run["rps"],
        }
    finally:
        server.stop()


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    configs = results["configs"]
    one = configs["1 worker"]
    lines = [
        "# What a model's second worker costs (ResNet-18, `mme serve` prefork)",
        "",
        f"Machine: {results['machine']}",
        "",
        "Private memory (USS) of the model's processes: after its LOAD; once each worker has "
        "answered requests, one at a time (as many clients as workers); and after "
        f"{results['clients']} keep-alive clients ran for {results['seconds_per_run']:.0f} s "
        "twice (batches of up to 8 images in each worker at once). Throughput: the second run.",
        "",
        "| workers | processes | USS loaded | USS warm | USS busy | req/s |",
        "|---|---|---|---|---|---|",
    ]
    for label, measured in configs.items():
        cells = [
            _cell(measured[stage]["uss_mib"], one[stage]["uss_mib"], label != "1 worker")
            for stage in STAGES
        ]
        lines.append(
            f"| {label} | {measured['processes']} | {' | '.join(cells)} | {measured['rps']:.1f} |"
        )
    shared = configs["2 workers, shared"]
    verdicts = [
        f"{stage} {shared[stage]['uss_mib'] / one[stage]['uss_mib']:.2f}x"
        for stage in ("loaded", "warm")
    ]
    passes = all(shared[s]["uss_mib"] <= (1 + GOAL) * one[s]["uss_mib"] for s in ("loaded", "warm"))
    lines += [
        "",
        f"Goal: 2 workers hold at most {1 + GOAL:.2f}x the private memory of 1: "
        f"{'passes' if passes else 'FAILS'} ({', '.join(verdicts)}). Under load each worker "
        "that computes also holds the activations of its batch, whichever way it is built "
        "(busy column).",
        "",
        results["note"],
        "",
    ]
    return "\n".join(lines)


def _cell(mib: float, one_worker: float, ratio: bool) -> str:
    return f"{mib:.1f} MiB ({mib / one_worker:.2f}x)" if ratio else f"{mib:.1f} MiB"
