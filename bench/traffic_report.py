"""bench/results/mme-traffic.*: ratios, goals and tables of the MME traffic shapes.

Ratios are always ours divided by the other value: above 1 is better for req/s, below 1
is better for latency. Goals are reported, never enforced: timing goals live in the
benchmark, not in assertions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.plots import render, traffic_panels
from bench.shapes import P50, RPS, SHAPES

KIND = "mme-traffic"
AGAINST = ("stock", "floor", "baseline")


@dataclass(frozen=True)
class Goal:
    """``ours / against`` of shape ``shape`` must reach ``limit`` (from above for latency)."""

    text: str
    shape: str
    against: str
    limit: float

    def passed(self, ratio: float | None, higher_is_better: bool) -> bool | None:
        """Whether ``ratio`` meets the goal; None when it could not be measured."""
        if ratio is None:
            return None
        return ratio >= self.limit if higher_is_better else ratio <= self.limit


# Issue 11's goals on a 2-vCPU machine. "No worse than today" for throughput allows the
# same 5% as the latency goal: less is within the noise of one run on a shared machine.
GOALS = (
    Goal("4 models, 16 clients: >= 1.1x the stock stack", "k4", "stock", 1.1),
    Goal("4 models, 16 clients: >= 0.9x the parallel in-process floor", "k4", "floor", 0.9),
    Goal("1 model, 2 workers, 16 clients: >= the stock stack", "w2", "stock", 1.0),
    Goal("1 model, sequential p50: <= 1.05x today (baseline)", "seq", "baseline", 1.05),
    Goal("1 model, 16 clients: no worse than today (>= 0.95x baseline)", "k1", "baseline", 0.95),
    # Issue 13's: what the gateway's batches reach of the best batches in-process.
    Goal("1 model, 16 clients: >= 0.8x the batched in-process floor", "k1", "batched", 0.8),
    *(
        Goal(f"{shape.label}: never slower than the stock stack", shape.key, "stock", 1.0)
        for shape in SHAPES
    ),
)


def compact(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each shape's judged number for both stacks: what a later run compares itself with."""
    return {
        key: {
            "metric": shape["metric"],
            "stock": shape["stock"][shape["metric"]],
            "ours": shape["ours"][shape["metric"]],
        }
        for key, shape in results["shapes"].items()
    }


def load_baseline(path: Path) -> dict[str, Any]:
    """A previous run's mme-traffic.json, reduced to what ``finish`` compares with.

    Raises ValueError, saying why, for a file that is not such a run.
    """
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--baseline {path}: cannot read it ({exc})") from exc
    if not isinstance(previous, dict) or previous.get("kind") != KIND:
        raise ValueError(f"--baseline {path}: not an {KIND}.json written by `make bench`")
    return {
        "path": str(path),
        "revision": previous.get("revision"),
        "machine": previous.get("machine"),
        "shapes": compact(previous),
    }


def _floor(results: dict[str, Any], metric: str, kind: str = "") -> float | None:
    """The floor ``kind`` (default: the sequential one for latency, the parallel one for
    throughput) in ``metric``; None when it was not measured or is of another metric."""
    kind = kind or ("sequential" if metric == P50 else "parallel")
    floor = results["floors"].get(kind)
    return floor.get(metric) if floor else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per shape: ours/stock, ours/floor and ours/baseline (None where there is no value)."""
    baseline = (results.get("baseline") or {}).get("shapes", {})
    table: dict[str, dict[str, float | None]] = {}
    for key, shape in results["shapes"].items():
        metric = shape["metric"]
        ours = shape["ours"][metric]
        others = {
            "stock": shape["stock"][metric],
            "floor": _floor(results, metric),
            "batched": _floor(results, metric, "batched") if metric == RPS else None,
            "baseline": baseline.get(key, {}).get("ours"),
        }
        table[key] = {against: ours / value if value else None for against, value in others.items()}
    return table


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal with its measured ratio and pass (True), fail (False) or n/a (None)."""
    table = ratios(results)
    judged = []
    for goal in GOALS:
        shape = results["shapes"].get(goal.shape)
        ratio = table.get(goal.shape, {}).get(goal.against)
        higher = shape is not None and shape["metric"] == RPS
        judged.append(
            {
                "goal": goal.text,
                "ratio": ratio,
                "passed": goal.passed(ratio, higher) if shape else None,
            }
        )
    return judged


def finish(measured: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The measured run with its baseline, ratios and goals added."""
    results = {**measured, "baseline": baseline}
    return {**results, "ratios": ratios(results), "goals": goals(results)}


def _value(metric: str, value: float) -> str:
    return f"{value:.1f} req/s" if metric == RPS else f"{value:.1f} ms"


def _cell(shape: dict[str, Any], stack: str) -> str:
    run = shape[stack]
    if shape["metric"] == P50:
        return f"{run['p50_ms']:.1f} ms (p99 {run['p99_ms']:.1f})"
    return f"{run['rps']:.1f} req/s (p50 {run['p50_ms']:.0f} / p99 {run['p99_ms']:.0f} ms)"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "n/a"}[passed]


def markdown(results: dict[str, Any]) -> str:
    """The shapes table, the floors, the goals table and how the run was made."""
    floors = results["floors"]
    lines = [
        "# `make bench`: MME traffic, the stock stack vs `mme serve`",
        "",
        "Stock stack: the SageMaker Inference Toolkit's `start_model_server` with the seed's "
        "handler service, MMS's defaults (1 worker per model, `OMP_NUM_THREADS=1` per "
        "worker). Ours: `mme serve` with its defaults. Same user `code/inference.py` "
        "(TorchScript ResNet-18, JPEG in, top-5 JSON out), keep-alive clients on 127.0.0.1. "
        "Throughput: the median of the rounds (every round in JSON). Ratios: ours / other "
        "(higher is better for req/s, lower for ms).",
        "",
        "| shape | stock stack | `mme serve` | ours/stock | ours/floor | ours/baseline |",
        "|---|---|---|---|---|---|",
    ]
    for key, shape in results["shapes"].items():
        ratio = results["ratios"][key]
        lines.append(
            f"| {shape['label']} | {_cell(shape, 'stock')} | {_cell(shape, 'ours')} | "
            + " | ".join(_ratio(ratio[a]) for a in AGAINST)
            + " |"
        )
    lines.append("")
    if "sequential" in floors:
        sequential = floors["sequential"]
        lines.append(
            f"In-process floor, sequential: one process, {sequential['threads']} "
            f"threads: p50 {sequential['p50_ms']:.1f} ms "
            f"(p99 {sequential['p99_ms']:.1f} ms)."
        )
    if "parallel" in floors:
        parallel = floors["parallel"]
        lines.append(
            f"In-process floor, parallel: {parallel['processes']} one-thread "
            f"processes at once: {parallel['rps']:.1f} images/s summed "
            "(no batching; measured in turns with the 4-model rounds)."
        )
    if "batched" in floors:
        batched = floors["batched"]
        lines.append(
            f"In-process floor, batched: one process, {batched['threads']} threads, batches "
            f"of {batched['batch']} images: {batched['rps']:.1f} images/s (measured in turns "
            "with the 1-model rounds)."
        )
    lines += ["", "| goal (issues 11, 13) | measured | |", "|---|---|---|"]
    lines += [
        f"| {g['goal']} | {_ratio(g['ratio'])} | {_verdict(g['passed'])} |"
        for g in results["goals"]
    ]
    lines += ["", *_provenance(results), ""]
    return "\n".join(lines)


def _provenance(results: dict[str, Any]) -> list[str]:
    options = results["options"]
    lines = [
        f"Machine: {results['machine']}",
        "",
        f"Revision: {results['revision']}; environment: {results['environment'] or 'none'}"
        f"; {options['rounds']} rounds of {options['seconds']:g} s per shape, "
        f"{options['sequential_requests']} sequential requests per target; "
        f"{results['seconds']:.0f} s in all.",
    ]
    baseline = results.get("baseline")
    if baseline:
        lines += [
            "",
            f'Baseline ("today"): {baseline["path"]}, revision '
            f"{baseline['revision']}; its machine: {baseline['machine']}.",
        ]
        drift = _stock_drift(results)
        if drift is not None:
            lines.append(
                f"The stock stack now / in the baseline, median over shapes: "
                f"{drift:.2f}x (how much the machine itself moved)."
            )
    else:
        lines += [
            "",
            "No baseline: pass `--baseline` a previous mme-traffic.json for the "
            '"no worse than today" goals.',
        ]
    return lines


def _stock_drift(results: dict[str, Any]) -> float | None:
    """How the unchanged stock stack moved against the baseline: the noise of the comparison."""
    shapes = results["baseline"]["shapes"]
    moved = sorted(
        shape["stock"][shape["metric"]] / shapes[key]["stock"]
        for key, shape in results["shapes"].items()
        if shapes.get(key, {}).get("stock") and shape["metric"] == RPS
    )
    return moved[len(moved) // 2] if moved else None


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write mme-traffic.json, .md and .png under ``out_dir``; return their paths."""
    return [
        *report.write_pages(results, out_dir, KIND, markdown),
        render(traffic_panels(results), out_dir / f"{KIND}.png"),
    ]
