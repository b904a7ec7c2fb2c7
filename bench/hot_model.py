"""A hot model against what the hardware can do: `mme serve` beside the in-process floors.

For each example ResNet (packaged by `mme package`: the frozen TorchScript artifact), one
`mme serve` with the model loaded, and two floors that run the same `inference.py` in a
process of their own with every core: one image at a time (sequential latency), and
batches of 8 images (throughput). The server and its floor take turns: blocks of
sequential requests, then rounds of 16 keep-alive clients against rounds of the batched
floor. Goals (issue 13): sequential p50 <= 1.15x the floor's; throughput >= 0.8x the
batched floor's.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from bench import report
from bench.floor import FloorProcesses
from bench.rounds import interleaved
from bench.scenarios import Payload, throughput, warm_latency, warm_up_jit
from bench.server import mme_serve
from bench.shapes import FLOOR_BATCH
from bench.traffic import NOOP

CLIENTS = 16
LATENCY_GOAL = 1.15
THROUGHPUT_GOAL = 0.8


def benchmark(
    root: Path,
    models: dict[str, Path],
    noop: Path,
    image: Payload,
    options: dict[str, Any],
    out_dir: Path,
    note: str,
) -> list[Path]:
    """Measure each of ``models`` (name -> model folder) under ``root``, after warming the
    server's Java request path up with the no-op model ``noop``; write hot-model.json and
    .md under ``out_dir``. ``options``: seconds, rounds, requests."""
    return report.measure_and_write(
        lambda: {
            "options": options,
            "models": {
                name: _measure(root, name, path, noop, image, options)
                for name, path in models.items()
            },
        },
        note,
        out_dir,
        "hot-model",
        markdown,
    )


def _measure(
    root: Path, name: str, model_dir: Path, noop: Path, image: Payload, options: dict[str, Any]
) -> dict[str, Any]:
    print(f"hot model: {name} ...", flush=True)
    cpus = len(os.sched_getaffinity(0))
    server = mme_serve(None, root / "models", root, f"hot-{name}")
    with FloorProcesses(model_dir, image.body, image.content_type, 1, cpus) as floor:
        try:
            server.start()
            server.load("noop", noop)
            warm_up_jit(server, "noop", NOOP)
            server.load(name, model_dir)
            invoke = partial(server.invoke, name, image.body, image.content_type)
            latency = warm_latency({"ours": invoke, "floor": floor.once}, options["requests"])
            rates = interleaved(
                {
                    "ours": partial(throughput, server, [name], image, CLIENTS, options["seconds"]),
                    "batched floor": partial(floor.throughput, options["seconds"], FLOOR_BATCH),
                },
                options["rounds"],
            )
        finally:
            server.stop()
    return {
        "sequential": latency,
        "throughput": rates,
        "latency_ratio": latency["ours"]["p50_ms"] / latency["floor"]["p50_ms"],
        "throughput_ratio": rates["ours"]["rps"] / rates["batched floor"]["rps"],
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    options = results["options"]
    lines = [
        "# A hot model against the in-process floors (`mme serve`, its defaults)",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Sequential: {options['requests']} requests in blocks, taking turns with the floor "
        f"(one process, every core, one image at a time). Throughput: {CLIENTS} keep-alive "
        f"clients, {options['rounds']} rounds of {options['seconds']:g} s taking turns with the "
        f"batched floor (one process, every core, batches of {FLOOR_BATCH} images: decode and "
        "preprocess each, one forward pass, each image's answer); the median round.",
        "",
        "| model | sequential p50 | floor p50 | ratio (goal <= 1.15x) | req/s | batched floor "
        "images/s | ratio (goal >= 0.8x) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, measured in results["models"].items():
        latency, rates = measured["sequential"], measured["throughput"]
        slower, share = measured["latency_ratio"], measured["throughput_ratio"]
        lines.append(
            f"| {name} | {latency['ours']['p50_ms']:.1f} ms | {latency['floor']['p50_ms']:.1f} ms "
            f"| {_judged(slower, slower <= LATENCY_GOAL)} | {rates['ours']['rps']:.1f} "
            f"| {rates['batched floor']['rps']:.1f} | {_judged(share, share >= THROUGHPUT_GOAL)} |"
        )
    lines += ["", results["note"], ""]
    return "\n".join(lines)


def _judged(ratio: float, passed: bool) -> str:
    return f"{ratio:.2f}x {'pass' if passed else '**FAIL**'}"
