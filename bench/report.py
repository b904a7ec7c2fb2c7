"""bench/results: the JSON of a run and its Markdown table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from bench.plots import write_plots


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    return {
        "cpu": cpu_model,
        "cpus_available": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def revision() -> str:
    """The source's git commit, with ``+changes`` when the work tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"{commit}+changes" if changed.strip() else commit


# Variables that change how either stack runs its workers; a run records those it found set.
ENVIRONMENT_PREFIXES = ("MME_", "SAGEMAKER_", "OMP_", "MKL_", "KMP_", "GOMP_", "TORCH_")


def environment() -> dict[str, str]:
    """The variables of this environment that the servers under test inherit and read."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(ENVIRONMENT_PREFIXES)
    }


def write_pages(
    results: dict[str, Any], out_dir: Path, stem: str, page: Callable[[dict[str, Any]], str]
) -> list[Path]:
    """Write ``<stem>.json`` (the results) and ``<stem>.md`` (``page`` of them) under
    ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(page(results))
    return [json_path, md_path]


def measure_and_write(
    measure: Callable[[], dict[str, Any]],
    note: str,
    out_dir: Path,
    stem: str,
    page: Callable[[dict[str, Any]], str],
) -> list[Path]:
    """Run ``measure``; write its results, with the machine, the revision, ``note`` and the
    seconds it took, as :func:`write_pages` does."""
    started = time.monotonic()
    results = {"machine": machine(), "revision": revision(), "note": note, **measure()}
    results["seconds"] = time.monotonic() - started
    return write_pages(results, out_dir, stem, page)


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the PNG plots under ``out_dir``; return them."""
    return [*write_pages(results, out_dir, "results", markdown), *write_plots(results, out_dir)]


def _ratio(stock: float, prefork: float) -> str:
    return f"{stock / prefork:.1f}x" if prefork else "-"


def _row(label: str, stock: float, prefork: float, unit: str, better_low: bool = True) -> str:
    ratio = _ratio(stock, prefork) if better_low else _ratio(prefork, stock)
    return f"| {label} | {_value(stock, unit)} | {_value(prefork, unit)} | {ratio} |"


def _value(number: float, unit: str) -> str:
    return f"{number:.{3 if unit == 's' else 1}f} {unit}".rstrip()


def _warm_cell(mode: dict[str, Any], floor: dict[str, float]) -> str:
    p50 = mode["warm"]["p50_ms"]
    return f"{p50:.1f} ms ({p50 / floor['p50_ms']:.2f}x floor)"


def markdown(results: dict[str, Any]) -> str:
    """The table: one row per measurement, stock against prefork, medians over repetitions."""
    modes = results["modes"]
    stock, prefork = modes["stock"], modes["prefork"]
    lines = [
        "# `make bench`: stock MMS workers vs pre-forked workers",
        "",
        f"Machine: {results['machine']}",
        "",
        f"Repetitions: {results['repetitions']}; cold numbers are medians "
        "(min..max in results.json); throughput is the median of 3 rounds per mode (every "
        "round's req/s in results.json); warm latency is sequential, in blocks of 10 requests "
        "that take turns. Ratio: how many times better prefork is.",
        "",
        "| measurement | stock | prefork | ratio |",
        "|---|---|---|---|",
    ]
    for key, label in (("ping_s", "start to MMS /ping"), ("ready_s", "start to ready")):
        lines.append(
            _row(
                f"server {label}",
                stock["start"][key]["median"],
                prefork["start"][key]["median"],
                "s",
            )
        )
    for variant in results["variants"]:
        for key, label in (("load_s", "LOAD"), ("first_invoke_s", "first invoke")):
            lines.append(
                _row(
                    f"{variant} {label}",
                    stock["cold"][variant][key]["median"],
                    prefork["cold"][variant][key]["median"],
                    "s",
                )
            )
    floor = results["floor"]
    lines.append(
        f"| resnet_18 warm p50 (in-process floor {floor['p50_ms']:.1f} ms) | "
        f"{_warm_cell(stock, floor)} | {_warm_cell(prefork, floor)} | "
        f"{_ratio(stock['warm']['p50_ms'], prefork['warm']['p50_ms'])} |"
    )
    lines.append(
        _row(
            f"resnet_18 warm p99 (floor {floor['p99_ms']:.1f} ms)",
            stock["warm"]["p99_ms"],
            prefork["warm"]["p99_ms"],
            "ms",
        )
    )
    for model in ("noop", "resnet_18"):
        for s_run, p_run in zip(
            stock["throughput"][model], prefork["throughput"][model], strict=True
        ):
            lines.append(
                _row(
                    f"{model} throughput, {s_run['clients']} clients",
                    s_run["rps"],
                    p_run["rps"],
                    "req/s",
                    better_low=False,
                )
            )
            lines.append(
                _row(
                    f"{model} p50 / p99, {s_run['clients']} clients (p99 in JSON)",
                    s_run["p50_ms"],
                    p_run["p50_ms"],
                    "ms",
                )
            )
    for key, label in (("per_model_uss_mib", "USS"), ("per_model_pss_mib", "PSS")):
        lines.append(
            _row(
                f"resnet_18 {label} per loaded model",
                stock["memory"][key],
                prefork["memory"][key],
                "MiB",
            )
        )
    lines.append(
        _row(
            "fixed USS (Java; + zygote in prefork)",
            stock["memory"]["fixed_uss_mib"],
            prefork["memory"]["fixed_uss_mib"],
            "MiB",
        )
    )
    budget = results["budget_mib"]
    counts = [
        f"{m['memory']['models_in_budget']:.0f}"
        + ("+ (limit of the run)" if m["memory"]["hit_limit"] else "")
        for m in (stock, prefork)
    ]
    fitted = [m["memory"]["models_in_budget"] for m in (stock, prefork)]
    lines.append(
        f"| resnet_18 models within {budget:.0f} MiB USS (fixed USS included) | "
        f"{counts[0]} | {counts[1]} | {_ratio(fitted[1], fitted[0])} |"
    )
    lines.append(
        _row("UNLOAD (HTTP)", stock["memory"]["unload_s"], prefork["memory"]["unload_s"], "s")
    )
    lines.append(
        _row(
            "UNLOAD until the processes are gone",
            stock["memory"]["gone_s"],
            prefork["memory"]["gone_s"],
            "s",
        )
    )
    lines.append(
        _row(
            "memory given back per UNLOAD (USS)",
            stock["memory"]["freed_uss_mib"],
            prefork["memory"]["freed_uss_mib"],
            "MiB",
        )
    )
    lines += ["", results.get("note", ""), ""]
    return "\n".join(lines)
