"""`make bench`: six benchmarks, each comparing side by side in one run, on 127.0.0.1 only.

    python -m bench.run [--only workers|traffic|density|metrics|shared|hot] [--out bench/results]
                        [--seconds 4] [--rounds 3] [--baseline bench/results/mme-traffic.json] ...

workers: `mme serve` with MMS's stock workers against pre-forked ones: cold LOADs, warm
  latency, throughput, memory (results.json, results.md, latency.png, memory.png).
traffic: the traffic MME is for, for the stock stack as users run it (the SageMaker
  Inference Toolkit's start_model_server) and for `mme serve` with its defaults: 1, 2, 4
  and 8 models under 16 keep-alive clients, one model with 2 workers, sequential p50;
  with the in-process floors (mme-traffic.json, .md, .png; see bench/traffic.py).
density: tiny models, 1 to --density-models in one prefork server (a few with MMS's stock
  workers beside): memory, processes, threads, files, LOAD and invoke p50 against the count
  (density.json, .md, .png; see bench/density.py).
metrics: what the Prometheus metrics cost an invocation: a no-op model through two servers,
  metrics on and off, in interleaved rounds (metrics-cost.json, .md; see bench/metrics_cost.py).
shared: what a model's second worker costs: ResNet-18 with 1 worker, 2 workers sharing one
  copy, 2 with a copy each; memory and throughput (shared-workers.json, .md; see
  bench/shared_workers.py).
hot: the example ResNet-18 and ResNet-152 served against in-process floors with every core:
  sequential p50, and 16 clients against batches of 8 (hot-model.json, .md; see
  bench/hot_model.py).

Servers that are compared run at the same time and take turns, so that a busy machine
slows both alike. Goals are printed, pass or fail; the run never fails on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench import (
    density,
    hot_model,
    metrics_cost,
    models,
    report,
    shared_workers,
    traffic,
    traffic_report,
)
from bench.floor import InProcess
from bench.rounds import interleaved
from bench.scenarios import (
    JPEG,
    JSON,
    Payload,
    cold_load,
    memory_budget,
    throughput,
    warm_latency,
    warm_up_jit,
)
from bench.server import mme_serve
from bench.signals import exit_on_sigterm
from bench.stats import summary
from bench.traffic import TrafficOptions
from harness.models import jpeg_bytes

MODES = ("stock", "prefork")
HOT_MODELS = ("resnet_18", "resnet_152")
PARTS = ("workers", "traffic", "density", "metrics", "shared", "hot")
CLIENTS = (1, 4, 16)
THROUGHPUT_ROUNDS = 3  # per mode and client count; the median round is reported
NOTE = (
    "Measured on a shared machine (other jobs ran at the same time): absolute numbers "
    "are noisy; ratios within one run compare like with like."
)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only", choices=PARTS, default=None, help="run one benchmark only (default: all)"
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=3,
        help="workers: server starts and cold LOADs per mode and model (default 3)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where the results go (default bench/results)",
    )
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=3072.0,
        help="workers: USS budget for counting loaded ResNet-18s (default 3072)",
    )
    parser.add_argument(
        "--max-models",
        type=int,
        default=40,
        help="workers: stop loading ResNet-18s at this many (default 40)",
    )
    parser.add_argument(
        "--warm-requests",
        type=int,
        default=200,
        help="sequential requests per target for warm latency and the sequential p50 (default 200)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=4.0,
        help="length of each throughput run, both benchmarks (default 4)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="traffic: rounds per shape and stack; the median is reported (default 3)",
    )
    parser.add_argument(
        "--density-models",
        type=int,
        default=1000,
        help="density: tiny models in one prefork server (default 1000)",
    )
    parser.add_argument(
        "--density-stock",
        type=int,
        default=density.STOCK_MODELS,
        help=f"density: tiny models with MMS's stock workers (default "
        f"{density.STOCK_MODELS}; 0 for none)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="traffic: a previous mme-traffic.json to compare ours with "
        '("today"); read at start, so it may be the file this run '
        "replaces",
    )
    parser.add_argument(
        "--skip-resnet-152",
        action="store_true",
        help="workers: leave ResNet-152 out, for a quick run",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.warm_requests < 1:
        parser.error("--seconds must be positive, --rounds and --warm-requests at least 1")
    return args


def _build_models(root: Path, skip_152: bool) -> dict[str, Path]:
    staging = root / "staging"
    names = ["resnet_18"] + ([] if skip_152 else ["resnet_152"])
    urls = {}
    for name in names:
        urls[f"{name} torchscript"] = models.torchscript_model(
            name, staging, root / "models" / f"{name}-ts" / "model"
        )
        urls[f"{name} state_dict"] = models.state_dict_model(
            name, root / "models" / f"{name}-sd" / "model"
        )
    urls["noop"] = models.noop_model(root / "models" / "noop" / "model")
    return urls


def _cold_rounds(
    args: argparse.Namespace, root: Path, urls: dict[str, Path], image: Payload
) -> dict[str, dict[str, Any]]:
    variants = [v for v in urls if v != "noop"]
    raw: dict[str, dict[str, Any]] = {
        m: {"start": [], "cold": {v: [] for v in variants}} for m in MODES
    }
    for rep in range(args.repetitions):
        for mode in MODES:
            server = mme_serve(mode, root / "models", root, f"cold-{rep}")
            try:
                raw[mode]["start"].append(server.start())
                for variant in variants:
                    name = f"{variant.replace(' ', '-')}-{rep}"
                    raw[mode]["cold"][variant].append(cold_load(server, name, urls[variant], image))
                    print(
                        f"  {mode} {variant} rep {rep}: {raw[mode]['cold'][variant][-1]}",
                        flush=True,
                    )
            finally:
                server.stop()
    return {
        m: {
            "start": _summaries(raw[m]["start"]),
            "cold": {v: _summaries(raw[m]["cold"][v]) for v in variants},
        }
        for m in MODES
    }


def _summaries(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: summary([run[key] for run in runs]) for key in runs[0]}


def _steady(
    args: argparse.Namespace, root: Path, urls: dict[str, Path], image: Payload
) -> dict[str, Any]:
    """Warm latency and throughput with both servers up, taking turns request by request
    (latency) or run by run (throughput), so that a busy machine slows both alike."""
    noop = Payload(b'{"ping": 1}', JSON)
    servers = {mode: mme_serve(mode, root / "models", root, "steady") for mode in MODES}
    try:
        for server in servers.values():
            server.start()
            server.load("r18", urls["resnet_18 torchscript"])
            server.load("noop", urls["noop"])
        for server in servers.values():
            warm_up_jit(server, "noop", noop)
        floor = InProcess(urls["resnet_18 torchscript"], image.body, image.content_type)
        targets = {
            mode: partial(server.invoke, "r18", image.body, image.content_type)
            for mode, server in servers.items()
        }
        warm = warm_latency({**targets, "floor": floor.once}, args.warm_requests)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in MODES}
        for model, name, payload in (("noop", "noop", noop), ("resnet_18", "r18", image)):
            for mode in MODES:
                runs[mode][model] = []
            for clients in CLIENTS:
                medians = interleaved(
                    {
                        mode: partial(
                            throughput, servers[mode], [name], payload, clients, args.seconds
                        )
                        for mode in MODES
                    },
                    THROUGHPUT_ROUNDS,
                )
                for mode in MODES:
                    runs[mode][model].append(medians[mode])
    finally:
        for server in servers.values():
            server.stop()
    return {
        "floor": warm["floor"],
        **{mode: {"warm": warm[mode], "throughput": runs[mode]} for mode in MODES},
    }


def _memory(
    args: argparse.Namespace, root: Path, url: Path, image: Payload, mode: str
) -> dict[str, Any]:
    server = mme_serve(mode, root / "models", root, "memory")
    try:
        server.start()
        budget = memory_budget(server, url, image, args.budget_mib, args.max_models)
    finally:
        server.stop()
    return {"memory": _memory_summary(budget), "memory_raw": budget}


def _memory_summary(budget: dict[str, Any]) -> dict[str, float]:
    unloads = budget["unload"]
    return {
        "per_model_uss_mib": statistics.median(m["uss_mib"] for m in budget["per_model"]),
        "per_model_pss_mib": statistics.median(m["pss_mib"] for m in budget["per_model"]),
        "fixed_uss_mib": budget["fixed"]["uss_mib"],
        "models_in_budget": budget["models_in_budget"],
        "hit_limit": budget["hit_limit"],
        "unload_s": statistics.median(u["unload_s"] for u in unloads),
        "gone_s": statistics.median(u["processes_gone_s"] for u in unloads),
        "freed_uss_mib": statistics.median(u["uss_freed_mib"] for u in unloads),
    }


def _worker_modes(
    args: argparse.Namespace, root: Path, urls: dict[str, Path], image: Payload
) -> list[Path]:
    """Stock against pre-forked workers; write results.json, .md and the PNGs."""
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": report.machine(),
        "repetitions": args.repetitions,
        "budget_mib": args.budget_mib,
        "note": NOTE,
    }
    results["variants"] = [v for v in urls if v != "noop"]
    print("cold starts ...", flush=True)
    cold = _cold_rounds(args, root, urls, image)
    print("warm latency and throughput ...", flush=True)
    steady = _steady(args, root, urls, image)
    results["floor"] = steady["floor"]
    modes: dict[str, Any] = {}
    for mode in MODES:
        print(f"memory, {mode} ...", flush=True)
        modes[mode] = {
            **cold[mode],
            **steady[mode],
            **_memory(args, root, urls["resnet_18 torchscript"], image, mode),
        }
    results["modes"] = modes
    results["seconds"] = time.monotonic() - started
    return report.write(results, args.out)


def _traffic(
    args: argparse.Namespace,
    root: Path,
    urls: dict[str, Path],
    image: Payload,
    baseline: dict[str, Any] | None,
) -> list[Path]:
    """The MME traffic shapes, stock stack against ours; write mme-traffic.json, .md, .png."""
    started = time.monotonic()
    options = TrafficOptions(args.seconds, args.rounds, args.warm_requests)
    measured = traffic.measure(
        options, root, traffic.Models(urls["resnet_18 torchscript"], urls["noop"], image)
    )
    results = {
        "kind": traffic_report.KIND,
        "machine": report.machine(),
        "revision": report.revision(),
        "environment": report.environment(),
        "options": asdict(options),
        **measured,
        "seconds": time.monotonic() - started,
        "note": NOTE,
    }
    return traffic_report.write(traffic_report.finish(results, baseline), args.out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or ``--only`` one); write bench/results/ (JSON, Markdown, PNG)."""
    args = _arguments(argv)
    # SIGTERM (a timeout, a kill) ends the run through the finally blocks that stop servers.
    exit_on_sigterm()
    try:
        baseline = traffic_report.load_baseline(args.baseline) if args.baseline else None
    except ValueError as exc:
        print(f"python -m bench.run: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    image = Payload(jpeg_bytes(), JPEG)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="mme-bench-") as temp:
        root = Path(temp)
        root.chmod(0o755)
        urls = (
            _build_models(root, args.skip_resnet_152 or args.only in ("traffic", "shared"))
            if args.only in (None, "workers", "traffic", "shared", "hot")
            else {}
        )
        if args.only in (None, "workers"):
            written += _worker_modes(args, root, urls, image)
            print(written[1].read_text())
        if args.only in (None, "traffic"):
            written += _traffic(args, root, urls, image, baseline)
            print(written[-2].read_text())
        if args.only in (None, "density"):
            written += density.benchmark(
                density.DensityOptions(args.density_models, args.density_stock),
                root,
                args.out,
                NOTE,
            )
            print(written[-2].read_text())
        if args.only in (None, "metrics"):
            written += metrics_cost.benchmark(
                metrics_cost.MetricsCostOptions(), root / "metrics", args.out, NOTE
            )
            print(written[-1].read_text())
        if args.only in (None, "shared"):
            written += shared_workers.benchmark(
                root, urls["resnet_18 torchscript"], image, args.seconds, args.out, NOTE
            )
            print(written[-1].read_text())
        if args.only in (None, "hot"):
            written += hot_model.benchmark(
                root,
                {
                    name: urls[f"{name} torchscript"]
                    for name in HOT_MODELS
                    if f"{name} torchscript" in urls
                },
                urls["noop"],
                image,
                # ResNet-152 answers a batch of 8 in about a second here: longer rounds.
                {
                    "seconds": 2 * args.seconds,
                    "rounds": args.rounds,
                    "requests": args.warm_requests,
                },
                args.out,
                NOTE,
            )
            print(written[-1].read_text())
    print(f"wrote {', '.join(map(str, written))} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
