"""`make soak`: a bounded soak of `mme endpoint` in front of a real `mme serve`.

    python -m soak.run [--seconds 180] [--concurrency 8] [--out .soak]

Builds a dozen tiny models, starts `mme serve` and `mme endpoint --container-url` on
127.0.0.1, then:

1. warm-up: invokes every model once, UNLOADs everything, takes a census;
2. traffic: a seeded random mix of loads, invokes, UNLOADs at the container and known-bad
   requests from --concurrency clients for --seconds, every answer checked;
3. end: measures the workers, UNLOADs everything, takes a census again (waiting up to
   --settle-timeout for idle threads to end) and compares it with the first.

Writes results.json and results.md to --out. Exit status 0 only if no outcome was
unexpected, nothing leaked and both servers exited cleanly; 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from harness.polling import settle
from soak import report
from soak.census import Census, collect_java_garbage, leaks, private_dirty_mib, quiet
from soak.models import ModelSpec, build_archives, model_specs
from soak.servers import ServerOptions, Servers
from soak.traffic import OPERATIONS, WARM_UP, Tally, Traffic, TrafficOptions
from soak.workers import WorkerWatch

DEFAULT_MIX = "invoke=60,load=20,unload=12,bad=8"
CLIENT_READ_TIMEOUT_S = 180  # longer than any wait the endpoint has: its answer is counted
CENSUS_EVERY_S = 2.0  # while waiting for the servers to settle


def _mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in OPERATIONS:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(OPERATIONS)}")
        mix[name.strip()] = float(weight)
    if not any(weight > 0 for weight in mix.values()):
        raise argparse.ArgumentTypeError("at least one weight must be positive")
    return mix


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not positive")
        return value

    return parse


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        prog="python -m soak.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds",
        type=_positive(float),
        default=180.0,
        help="how long the traffic runs (default 180; CI runs 45)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        help="client threads sending operations at once (default 8)",
    )
    parser.add_argument(
        "--models",
        type=_positive(int),
        default=12,
        help="how many models to build and spread the traffic over (default 12)",
    )
    parser.add_argument(
        "--max-loaded-models",
        type=_positive(int),
        default=5,
        help="the endpoint's --max-loaded-models; below --models, so that it "
        "loads and unloads all the time (default 5)",
    )
    parser.add_argument(
        "--worker-mode",
        choices=("prefork", "stock"),
        default="prefork",
        help="MME_WORKER_MODE of `mme serve` (default prefork)",
    )
    parser.add_argument(
        "--mix",
        type=_mix,
        default=_mix(DEFAULT_MIX),
        metavar="OP=W,...",
        help="relative weights of the operations invoke (any model), load "
        "(a model the container does not hold), unload (DELETE at the "
        "container) and bad (known-bad requests); default " + DEFAULT_MIX,
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the operations' random choices (default 1)"
    )
    parser.add_argument(
        "--invocation-timeout",
        type=_positive(float),
        default=60.0,
        help="the endpoint's --invocation-timeout in seconds (default 60)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=_positive(float),
        default=100.0,
        help="how long the final census may wait for idle threads and fds "
        "to go before they count as leaked; MMS's idle worker threads end "
        "after 60 s (default 100)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail the run on known upstream issues too (soak/traffic.py "
        "KNOWN_ISSUES), not only on unexpected outcomes",
    )
    parser.add_argument(
        "--progress-every",
        type=_positive(float),
        default=10.0,
        help="seconds between progress lines (default 10)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".soak"),
        help="where results.json, results.md and the servers' logs go (default .soak)",
    )
    args = parser.parse_args(argv)
    if args.max_loaded_models >= args.models:
        parser.error("--max-loaded-models must be below --models, or nothing is ever evicted")
    return args


def _print(line: str) -> None:
    print(line, flush=True)  # progress must show at once, in a pipe (CI's log) too


def main(argv: list[str] | None = None, say: Callable[[str], None] = _print) -> int:
    """Run the soak; 0 if it passed, 1 if not."""
    args = arguments(argv)
    with tempfile.TemporaryDirectory(prefix="mme-soak-") as work:
        result = soak(args, Path(work), say)
    paths = report.write(result, args.out)
    say(report.text(result))
    say("written: " + ", ".join(map(str, paths)))
    return 0 if result["verdict"]["ok"] else 1


def soak(args: argparse.Namespace, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Build the models, start the servers, warm up, run the traffic, count; the result."""
    specs = model_specs(args.models)
    prefix = build_archives(specs, work)
    servers = Servers(
        prefix,
        work,
        ServerOptions(args.worker_mode, args.max_loaded_models, args.invocation_timeout),
    )
    result: dict[str, Any] = {
        "settings": _settings(args),
        "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    say(f"starting `mme serve` ({args.worker_mode} workers) and `mme endpoint` ...")
    servers.start()
    last: Census | None = None
    try:
        last = _phases(args, servers, specs, result, say)
    finally:
        result["exit_codes"] = servers.stop()
        result["left_after_stop"] = _still_running(last)
        _keep_logs(work, args.out)
    result["verdict"] = _verdict(result)
    return result


def _phases(
    args: argparse.Namespace,
    servers: Servers,
    specs: list[ModelSpec],
    result: dict[str, Any],
    say: Callable[[str], None],
) -> Census:
    fresh = collect_java_garbage(servers.census())
    watch = WorkerWatch(servers.serve_pid)
    client = _client(servers, args.concurrency)
    traffic = Traffic(servers, specs, client, watch)

    say(f"warm-up: one call to each of {len(specs)} models")
    warm_up = _warm_up(traffic, Tally(args.strict))
    start = _quiet_census(servers, client, fresh, args.settle_timeout)

    say(f"traffic: {args.seconds:g} s from {args.concurrency} clients")
    client = _client(servers, args.concurrency)
    traffic.client = client
    tally = Tally(args.strict)
    started = time.monotonic()
    timeline = traffic.run(
        TrafficOptions(args.seconds, args.concurrency, args.seed, args.mix, args.progress_every),
        tally,
        say,
        lambda: private_dirty_mib(start.pids),
    )
    seconds = time.monotonic() - started
    alive = watch.finish(traffic.model_ids)
    metrics = _endpoint_metrics(servers.endpoint.metrics())

    say(
        f"end: UNLOAD everything, census (waiting up to {args.settle_timeout:g} s for idle threads)"
    )
    client.close()
    servers.unload_all()
    end = collect_java_garbage(
        settle(
            servers.census,
            lambda census: quiet(census) and not leaks(start, census),
            args.settle_timeout,
            CENSUS_EVERY_S,
        )
    )
    result.update(
        {
            "warm_up": _tally(warm_up, None),
            "traffic": _tally(tally, seconds),
            "endpoint_metrics": metrics,
            "census": {"fresh": fresh.to_json(), "start": start.to_json(), "end": end.to_json()},
            "leaks": leaks(start, end),
            "memory_timeline": timeline,
            "workers": _workers(watch, alive),
        }
    )
    return end


def _warm_up(traffic: Traffic, tally: Tally) -> Tally:
    """Invoke each model once, learning the container's name for each from the endpoint."""
    for spec in traffic.specs:
        outcome = traffic.invoke(spec, WARM_UP)
        tally.add(outcome)
        traffic.model_ids = traffic.servers.model_ids()
        if outcome.checked and spec.target in traffic.model_ids:
            traffic.watch.answered(spec.target, traffic.model_ids[spec.target])
    return tally


def _client(servers: Servers, concurrency: int) -> Any:
    # No retries: every answer is counted as it happened.
    return servers.endpoint.client(
        retries={"mode": "standard", "max_attempts": 1},
        read_timeout=CLIENT_READ_TIMEOUT_S,
        max_pool_connections=concurrency + 2,
    )


def _quiet_census(servers: Servers, client: Any, fresh: Census, timeout_s: float) -> Census:
    """UNLOAD everything; the census once the workers are gone and the endpoint's threads
    for our (now closed) connections have ended."""
    client.close()
    servers.unload_all()
    idle_threads = fresh.total("threads", "endpoint")
    return collect_java_garbage(
        settle(
            servers.census,
            lambda census: quiet(census) and (census.total("threads", "endpoint") <= idle_threads),
            timeout_s,
            CENSUS_EVERY_S,
        )
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "models": args.models,
        "max_loaded_models": args.max_loaded_models,
        "worker_mode": args.worker_mode,
        "mix": args.mix,
        "seed": args.seed,
        "invocation_timeout_s": args.invocation_timeout,
        "settle_timeout_s": args.settle_timeout,
        "strict": args.strict,
    }


def _tally(tally: Tally, seconds: float | None) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "rows": tally.rows(),
        "total": tally.total,
        "unexpected": tally.unexpected,
        "known_issues": tally.known_issues,
        "answers": tally.answers,
        "checked": tally.checked,
        "unexpected_samples": tally.unexpected_samples,
    }


def _endpoint_metrics(metrics: dict[str, float]) -> dict[str, Any]:
    prefix = "mme_endpoint_responses_total_"
    return {
        "loads": metrics.get("ModelLoadingTime_count", 0),
        "unloads": metrics.get("ModelUnloadingTime_count", 0),
        "downloads": metrics.get("ModelDownloadingTime_count", 0),
        "responses": {
            name[len(prefix) :]: int(value)
            for name, value in metrics.items()
            if name.startswith(prefix)
        },
    }


def _workers(watch: WorkerWatch, alive: list[Any]) -> dict[str, Any]:
    firsts = [worker.first["uss_mib"] for worker in watch.workers.values() if worker.first]
    return {
        "observed": len(firsts),
        "first_uss_mib": {
            "min": min(firsts, default=0.0),
            "median": round(statistics.median(firsts), 1) if firsts else 0.0,
            "max": max(firsts, default=0.0),
        },
        "alive_at_end": [worker.to_json() for worker in alive],
        "all": [worker.to_json() for worker in watch.workers.values()],
    }


def _still_running(census: Census | None) -> list[int]:
    """Pids of the last census that outlived the servers' exit."""
    if census is None:
        return []
    left = []
    for pid in (pid for pids in census.pids.values() for pid in pids):
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def _keep_logs(work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("serve.log", "endpoint.log"):
        if (work / name).exists():
            shutil.copyfile(work / name, out / name)


def _verdict(result: dict[str, Any]) -> dict[str, Any]:
    reasons = []
    for phase in ("warm_up", "traffic"):
        tally = result.get(phase)
        if tally is None:
            reasons.append(f"the {phase} did not finish")
            continue
        if tally["unexpected"]:
            reasons.append(f"{tally['unexpected']} unexpected outcomes in the {phase}")
        if tally["checked"] != tally["answers"]:
            reasons.append(
                f"{tally['answers'] - tally['checked']} answers of the {phase} were not checked"
            )
    reasons += [f"leak: {leak}" for leak in result.get("leaks", [])]
    reasons += [
        f"{name} exited with {code}" for name, code in result["exit_codes"].items() if code != 0
    ]
    if result["left_after_stop"]:
        reasons.append(
            f"processes left running after the servers stopped: {result['left_after_stop']}"
        )
    return {"ok": not reasons, "reasons": reasons}


if __name__ == "__main__":
    sys.exit(main())
