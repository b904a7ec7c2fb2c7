"""bench/results of the density benchmark: density.json, density.md and density.png.

The numbers per model come from the censuses: private memory per model beyond the first
((USS at N - USS at 1) / (N - 1)), and processes, threads and open files per model against
the server with no model loaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bench import report
from bench.plots import COLOURS

GOAL_USS_MIB = 10.0
GOAL_LOAD_S = 0.1
GOAL_INVOKE_MS = 5.0
GOAL_AT = 1000
WIDTH, PANEL_HEIGHT, MARGIN_LEFT, MARGIN_RIGHT = 900, 190, 80, 150
PLOT_TOP, PLOT_BOTTOM = 34, 34


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def per_model(mode: dict[str, Any], point: dict[str, Any]) -> dict[str, float]:
    """What one model costs at ``point``: USS beyond the first model, and processes,
    threads and open files against the idle server."""
    models = point["models"]
    first = mode["points"][0]
    taken, idle = point["census"], mode["idle"]
    uss = (
        (taken["total_uss_mib"] - first["census"]["total_uss_mib"]) / (models - 1)
        if models > 1 and first["models"] == 1
        else math.nan
    )
    return {
        "uss_mib": uss,
        **{
            what: (taken[f"total_{what}"] - idle[f"total_{what}"]) / models
            for what in ("processes", "threads", "fds")
        },
    }


def goals(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 18's goals against the prefork run's largest checkpoint: (goal, measured, met)."""
    mode = results["modes"].get("prefork")
    if not mode or not mode["points"]:
        return [("a prefork run", "none", False)]
    last = mode["points"][-1]
    at = f"at {last['models']:,} models"
    cost = per_model(mode, last)
    loads = [p["load_p50_s"] for p in mode["points"] if p["models"] >= 10]
    growth = loads[-1] / loads[0] if loads and loads[0] else math.nan
    return [
        (
            f"private memory per tiny model beyond the first <= {GOAL_USS_MIB:.0f} MiB",
            f"{cost['uss_mib']:.2f} MiB {at}",
            cost["uss_mib"] <= GOAL_USS_MIB,
        ),
        (
            f"LOAD p50 <= {GOAL_LOAD_S} s at {GOAL_AT:,} models, not growing with the count",
            f"{last['load_p50_s']:.3f} s {at} ({growth:.2f}x the p50 at 10)",
            last["load_p50_s"] <= GOAL_LOAD_S and last["models"] >= GOAL_AT,
        ),
        (
            f"warm invoke p50 <= {GOAL_INVOKE_MS:.0f} ms at {GOAL_AT:,} models",
            f"{last['warm_invoke']['p50_ms']:.2f} ms {at}",
            last["warm_invoke"]["p50_ms"] <= GOAL_INVOKE_MS and last["models"] >= GOAL_AT,
        ),
        ("no error", mode["error"] or "none", mode["error"] is None),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The tables: goals, then each mode's checkpoints."""
    machine = results["machine"]
    lines = [
        "# Density: many tiny models in one `mme serve`",
        "",
        f"{machine['cpus_available']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, torch {machine['torch']}; revision "
        f"{results.get('revision', '?')}; {results['seconds']:.0f} s. A tiny model: a 16x4 "
        "torch.nn.Linear state_dict and its inference.py. " + results["note"],
        "",
        "| goal (issue 18) | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {goal} | {measured} | {'yes' if met else 'NO'} |"
        for goal, measured, met in goals(results)
    ]
    for name, mode in results["modes"].items():
        lines += [
            "",
            f"## {name} workers",
            "",
            "| models | processes | threads | open files | USS, MiB | per model: USS "
            "beyond the first, MiB | processes | threads | files | LOAD p50 | LOAD p90 "
            "| warm invoke p50 | p99 |",
            "|" + "---|" * 13,
        ]
        for point in mode["points"]:
            taken, cost, warm = point["census"], per_model(mode, point), point["warm_invoke"]
            lines.append(
                f"| {point['models']:,} | {taken['total_processes']:,.0f} | "
                f"{taken['total_threads']:,.0f} | {taken['total_fds']:,.0f} | "
                f"{taken['total_uss_mib']:,.0f} | {_number(cost['uss_mib'], 2)} | "
                f"{cost['processes']:.2f} | {cost['threads']:.2f} | {cost['fds']:.2f} | "
                f"{point['load_p50_s']:.3f} s | {point['load_p90_s']:.3f} s | "
                f"{warm['p50_ms']:.2f} ms | {warm['p99_ms']:.2f} ms |"
            )
        lines += ["", _roles(mode), "", _afterwards(mode)]
    return "\n".join(lines) + "\n"


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _roles(mode: dict[str, Any]) -> str:
    if not mode["points"]:
        return ""
    last = mode["points"][-1]
    roles = last["census"]["roles"]
    cells = [
        f"{role} {h['processes']:,} ({h['threads']:,} threads, {h['fds']:,} files, "
        f"{h['uss_mib']:,.0f} MiB)"
        for role, h in roles.items()
        if h["processes"]
    ]
    return f"At {last['models']:,} models, by role: " + "; ".join(cells) + "."


def _afterwards(mode: dict[str, Any]) -> str:
    if mode["error"]:
        return f"The run stopped: {mode['error']}."
    after, idle = mode.get("after_unload"), mode["idle"]
    if not after or not mode.get("unload"):
        return ""
    return (
        f"UNLOAD p50 {mode['unload']['p50_ms']:.0f} ms. After every model was unloaded: "
        f"{after['total_processes']:.0f} processes, {after['total_threads']:.0f} threads, "
        f"{after['total_fds']:.0f} open files, {after['total_uss_mib']:.0f} MiB "
        f"(idle before: {idle['total_processes']:.0f}, {idle['total_threads']:.0f}, "
        f"{idle['total_fds']:.0f}, {idle['total_uss_mib']:.0f} MiB; MMS's threads end 60 s "
        "after their model)."
    )


def _series(results: dict[str, Any], pick: Any) -> dict[str, list[tuple[int, float]]]:
    series = {}
    for name, mode in results["modes"].items():
        points = [(p["models"], float(pick(mode, p))) for p in mode["points"]]
        series[name] = [(n, v) for n, v in points if not math.isnan(v)]
    return series


# title, unit, the value at a point, the goal, whether the values span decades (log scale)
PANELS = (
    (
        "Private memory (USS) per model beyond the first (log scale)",
        "MiB",
        lambda mode, p: per_model(mode, p)["uss_mib"],
        GOAL_USS_MIB,
        True,
    ),
    (
        "LOAD p50 of the models loaded since the last point (log scale)",
        "s",
        lambda mode, p: p["load_p50_s"],
        GOAL_LOAD_S,
        True,
    ),
    (
        "Warm invoke p50, models in turn",
        "ms",
        lambda mode, p: p["warm_invoke"]["p50_ms"],
        GOAL_INVOKE_MS,
        False,
    ),
    (
        "Threads per model (MMS's, the processes', the workers')",
        "",
        lambda mode, p: per_model(mode, p)["threads"],
        None,
        False,
    ),
    (
        "Open files per model (MMS's, the zygote's, the processes')",
        "",
        lambda mode, p: per_model(mode, p)["fds"],
        None,
        False,
    ),
)


def plot(results: dict[str, Any], path: Path) -> Path:
    """density.png: one panel per measure against the number of models (log scale)."""
    image = Image.new("RGB", (WIDTH, 30 + PANEL_HEIGHT * len(PANELS)), "white")
    draw = ImageDraw.Draw(image)
    x = 12
    for name in results["modes"]:
        draw.rectangle((x, 10, x + 14, 24), fill=COLOURS[name])
        draw.text((x + 20, 9), f"{name} workers", fill="black", font=_font(13))
        x += 170
    draw.text((x, 9), "- - goal (issue 18)", fill=(120, 120, 120), font=_font(13))
    counts = sorted({p["models"] for mode in results["modes"].values() for p in mode["points"]})
    for index, (title, unit, pick, goal, log) in enumerate(PANELS):
        _panel(
            draw, 30 + index * PANEL_HEIGHT, title, unit, counts, _series(results, pick), goal, log
        )
    image.save(path, "PNG")
    return path


def _panel(
    draw: ImageDraw.ImageDraw,
    top: int,
    title: str,
    unit: str,
    counts: list[int],
    series: dict[str, list[tuple[int, float]]],
    goal: float | None,
    log: bool,
) -> None:
    draw.text((12, top + 8), title, fill="black", font=_font(15))
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    upper, lower = top + PLOT_TOP, top + PANEL_HEIGHT - PLOT_BOTTOM
    values = [v for points in series.values() for _, v in points if v > 0]
    values += [goal] if goal else []
    high, low = max(values, default=1.0) * 1.15, min(values, default=1.0) / 2
    span = math.log10(max(counts[-1] if counts else 10, 10))

    def height(value: float) -> float:  # 0..1 of the plot's height
        if log:
            return math.log10(max(value, low) / low) / math.log10(high / low)
        return value / high

    def at(n: int, value: float) -> tuple[float, float]:
        return (
            left + (right - left) * math.log10(max(n, 1)) / span,
            lower - (lower - upper) * height(value),
        )

    draw.line((left, lower, right, lower), fill="black")
    draw.line((left, upper, left, lower), fill="black")
    for n in counts:
        tick_x, _ = at(n, high)
        draw.line((tick_x, lower, tick_x, lower + 4), fill="black")
        draw.text((tick_x - 10, lower + 6), f"{n:,}", fill="black", font=_font(11))
    draw.text((right + 24, lower + 6), "models", fill="black", font=_font(11))
    draw.text((8, upper - 4), f"{high:.3g} {unit}", fill="black", font=_font(11))
    if log:
        draw.text((8, lower - 12), f"{low:.3g} {unit}", fill="black", font=_font(11))
    if goal:
        _, goal_y = at(1, goal)
        for start in range(left, right, 12):
            draw.line((start, goal_y, min(start + 6, right), goal_y), fill=(120, 120, 120))
    for name, points in series.items():
        xy = [at(n, v) for n, v in points]
        if len(xy) > 1:
            draw.line(xy, fill=COLOURS[name], width=2)
        for px, py in xy:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=COLOURS[name])
        if xy:
            draw.text(
                (xy[-1][0] + 8, xy[-1][1] - 7),
                f"{points[-1][1]:.3g} {unit}",
                fill=COLOURS[name],
                font=_font(12),
            )


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write density.json, density.md and density.png under ``out_dir``; return them."""
    return [
        *report.write_pages(results, out_dir, "density", markdown),
        plot(results, out_dir / "density.png"),
    ]
