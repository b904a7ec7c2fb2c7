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
from pathlib import Path

import requests

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
TIMEOUT_S = 60


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.metrics_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds per server (default 10)")
    parser.add_argument(
        "--requests", type=int, default=300, help="sequential invocations per round (default 300)"
    )
    parser.add_argument(
        "--mode",
        choices=("prefork", "stock"),
        default="prefork",
        help="MME_WORKER_MODE of both servers (default prefork)",
    )
    return parser.parse_args()


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


def main() -> None:
    """Measure and print a Markdown table."""
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as folder:
        root = Path(folder)
        noop_model(root / "noop" / "model")
        servers = {
            label: NativeServer(
                root,
                env={"MME_WORKER_MODE": args.mode, **env},
                log_path=root / f"serve-{label}.log",
            )
            for label, env in (("metrics on", {}), ("metrics off", {"MME_METRICS": "off"}))
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
            for round_number in range(args.rounds):
                order = list(servers) if round_number % 2 == 0 else list(servers)[::-1]
                for label in order:
                    taken = _invocations(sessions[label], servers[label].url, args.requests)
                    seconds[label] += taken
                    medians[label].append(statistics.median(taken))
            scrapes = []
            for _ in range(20):
                started = time.perf_counter()
                sessions["metrics on"].get(
                    f"{servers['metrics on'].url}/metrics", timeout=TIMEOUT_S
                ).raise_for_status()
                scrapes.append(time.perf_counter() - started)
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"{args.rounds} interleaved rounds of {args.requests} sequential invocations of a "
        f"no-op model ({args.mode} workers)\n"
    )
    print("| server | p50 ms | p99 ms | median of round medians ms |")
    print("|---|---|---|---|")
    for label in servers:
        stats = latency(seconds[label])
        print(
            f"| {label} | {stats['p50_ms']:.3f} | {stats['p99_ms']:.3f} | "
            f"{statistics.median(medians[label]) * 1000:.3f} |"
        )
    differences = [
        (on - off) * 1e6
        for on, off in zip(medians["metrics on"], medians["metrics off"], strict=True)
    ]
    print(
        f"\nper round, on minus off (µs): {', '.join(f'{d:+.0f}' for d in differences)}; "
        f"median {statistics.median(differences):+.0f} µs"
    )
    print(f"GET /metrics with one model loaded: median {statistics.median(scrapes) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
