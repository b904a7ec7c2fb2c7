"""What the Prometheus metrics cost an invocation: a no-op model through `mme serve`.

    python -m bench.metrics_cost [--rounds 10] [--requests 300] [--mode prefork]

Two servers run side by side, one with the metrics (the default) and one with
MME_METRICS=off, each with the same no-op model. Rounds of sequential invocations on a
kept-alive connection alternate between them (which goes first alternates too), so the
noise of a shared machine falls on both alike; the per-round medians are compared. A
scrape of /metrics while the model is loaded is timed too. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from bench import report
from bench.models import noop_model
from bench.stats import latency
from harness.servers import NativeServer

BODY = b'{"ping": 1}'
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "X-Amzn-SageMaker-Target-Model": "noop.tar.gz",
}
WARM_UP_REQUESTS = 200
ON, OFF = "metrics on", "metrics off"
TIMEOUT_S = 60


def _arguments() -> MetricsCostOptions:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = MetricsCostOptions()
    parser.add_argument(
        "--rounds", type=int, default=defaults.rounds, help="rounds per server (default 10)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        help="sequential invocations per round (default 300)",
    )
    parser.add_argument(
        "--mode",
        choices=("prefork", "stock"),
        default="prefork",
        help="MME_WORKER_MODE of both servers (default prefork)",
    )
    args = parser.parse_args()
    return MetricsCostOptions(args.rounds, args.requests, args.mode)


def _invocations(session: requests.Session, url: str, count: int) -> list[float]:
    """Seconds each of ``count`` sequential invocations of the no-op model took."""
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.post(
            f"{url}/models/noop/invoke", data=BODY, headers=HEADERS, timeout=TIMEOUT_S
        )
        seconds.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"invoke failed with {answer.status_code}: {answer.text[:200]}")
    return seconds


@dataclass(frozen=True)
class MetricsCostOptions:
    """How many interleaved rounds, of how many sequential invocations, in which worker mode."""

    rounds: int = 10
    requests: int = 300
    mode: str = "prefork"


def benchmark(options: MetricsCostOptions, root: Path, out_dir: Path, note: str) -> list[Path]:
    """Measure under ``root``; write metrics-cost.json and .md under ``out_dir``."""
    return report.measure_and_write(
        lambda: {"options": asdict(options), **measure(options, root)},
        note,
        out_dir,
        "metrics-cost",
        markdown,
    )


def measure(options: MetricsCostOptions, root: Path) -> dict[str, Any]:
    """Both servers under ``root``, in interleaved rounds; the results as plain data."""
    noop_model(root / "noop" / "model")
    servers = {
        label: NativeServer(
            root,
            env={"MME_WORKER_MODE": options.mode, **env},
            log_path=root / f"serve-{label.replace(' ', '-')}.log",
        )
        for label, env in ((ON, {}), (OFF, {"MME_METRICS": "off"}))
    }
    sessions = {label: requests.Session() for label in servers}
    try:
        for label, server in servers.items():
            server.start()
            loaded = sessions[label].post(
                f"{server.url}/models",
                timeout=TIMEOUT_S,
                json={"model_name": "noop", "url": server.model_url("noop")},
            )
            loaded.raise_for_status()
            _invocations(sessions[label], server.url, WARM_UP_REQUESTS)
        seconds: dict[str, list[float]] = {label: [] for label in servers}
        medians: dict[str, list[float]] = {label: [] for label in servers}
        for round_number in range(options.rounds):
            order = list(servers) if round_number % 2 == 0 else list(servers)[::-1]
            for label in order:
                taken = _invocations(sessions[label], servers[label].url, options.requests)
                seconds[label] += taken
                medians[label].append(statistics.median(taken))
        scrapes = [_scrape_s(sessions[ON], servers[ON].url) for _ in range(20)]
    finally:
        for server in servers.values():
            server.stop()
    return {
        "servers": {
            label: {**latency(seconds[label]), "round_medians_s": medians[label]}
            for label in servers
        },
        "differences_us": [
            (on - off) * 1e6 for on, off in zip(medians[ON], medians[OFF], strict=True)
        ],
        "scrape_p50_ms": statistics.median(scrapes) * 1000,
    }


def _scrape_s(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    session.get(f"{url}/metrics", timeout=TIMEOUT_S).raise_for_status()
    return time.perf_counter() - started


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    options = results["options"]
    lines = [
        "# `make bench`: what the Prometheus metrics cost an invocation",
        "",
        f"{options['rounds']} interleaved rounds of {options['requests']} sequential "
        f"invocations of a no-op model ({options['mode']} workers), one server with the "
        "metrics and one with `MME_METRICS=off`, side by side.",
        "",
        "| server | p50 ms | p99 ms | median of round medians ms |",
        "|---|---|---|---|",
    ]
    for label, stats in results["servers"].items():
        lines.append(
            f"| {label} | {stats['p50_ms']:.3f} | {stats['p99_ms']:.3f} | "
            f"{statistics.median(stats['round_medians_s']) * 1000:.3f} |"
        )
    differences = results["differences_us"]
    lines += [
        "",
        f"Per round, on minus off (µs): {', '.join(f'{d:+.0f}' for d in differences)}; "
        f"median {statistics.median(differences):+.0f} µs.",
        f"GET /metrics with one model loaded: median {results['scrape_p50_ms']:.2f} ms.",
        "",
        f"Machine: {results['machine']}; revision {results['revision']}; "
        f"{results['seconds']:.0f} s. {results['note']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Measure and print the Markdown page."""
    options = _arguments()
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as folder:
        written = benchmark(options, Path(folder), Path(folder) / "results", note="")
        print(written[1].read_text())


if __name__ == "__main__":
    main()
