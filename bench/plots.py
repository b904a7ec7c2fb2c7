"""bench/results: latency.png, memory.png and mme-traffic.png, drawn with Pillow.

Each picture stacks panels; a panel is a horizontal bar chart with its own scale, one
row per measurement and one bar per mode, with the value written after each bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WIDTH = 900
LABEL_WIDTH = 290
VALUE_ROOM = 110
BAR_HEIGHT = 16
ROW_GAP = 10
TITLE_HEIGHT = 34
LEGEND_HEIGHT = 30
# Keyed by what the legend says. The stock stack is drawn as stock workers are, and
# `mme serve` as prefork (its default), so the pictures read alike.
COLOURS = {
    "stock": (214, 96, 77),
    "prefork": (67, 147, 195),
    "stock stack": (214, 96, 77),
    "mme serve": (67, 147, 195),
    "baseline": (116, 173, 120),
    "floor": (140, 140, 140),
}
TRAFFIC_LEGEND = {"stock": "stock stack", "ours": "mme serve"}


@dataclass(frozen=True)
class Panel:
    """One chart: a title, its unit, and rows of (label, {mode: value})."""

    title: str
    unit: str
    rows: list[tuple[str, dict[str, float]]]

    def height(self) -> int:
        """Pixels the panel takes."""
        bars = sum(len(values) for _, values in self.rows)
        return TITLE_HEIGHT + bars * BAR_HEIGHT + len(self.rows) * ROW_GAP + ROW_GAP


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, top: int) -> None:
    draw.text((12, top + 8), panel.title, fill="black", font=_font(16))
    scale_max = max((v for _, values in panel.rows for v in values.values()), default=1.0) or 1.0
    room = WIDTH - LABEL_WIDTH - VALUE_ROOM
    y = top + TITLE_HEIGHT
    for label, values in panel.rows:
        draw.text((12, y + 2), label, fill="black", font=_font(13))
        for mode, value in values.items():
            length = max(1, round(room * value / scale_max))
            draw.rectangle(
                (LABEL_WIDTH, y, LABEL_WIDTH + length - 1, y + BAR_HEIGHT - 3), fill=COLOURS[mode]
            )
            shown = f"{value:.3g} {panel.unit}"
            draw.text((LABEL_WIDTH + length + 6, y), shown, fill="black", font=_font(12))
            y += BAR_HEIGHT
        y += ROW_GAP


def _draw_legend(draw: ImageDraw.ImageDraw, modes: list[str], top: int) -> None:
    x = 12
    for mode in modes:
        draw.rectangle((x, top + 8, x + 14, top + 22), fill=COLOURS[mode])
        draw.text((x + 20, top + 7), mode, fill="black", font=_font(13))
        x += 130


def render(panels: list[Panel], path: Path) -> Path:
    """Draw ``panels`` one under the other into the PNG file ``path``."""
    modes = sorted(
        {mode for panel in panels for _, values in panel.rows for mode in values},
        key=list(COLOURS).index,
    )
    image = Image.new("RGB", (WIDTH, LEGEND_HEIGHT + sum(p.height() for p in panels)), "white")
    draw = ImageDraw.Draw(image)
    _draw_legend(draw, modes, 0)
    top = LEGEND_HEIGHT
    for panel in panels:
        _draw_panel(draw, panel, top)
        top += panel.height()
    image.save(path, "PNG")
    return path


def _by_mode(results: dict[str, Any], pick: Any) -> dict[str, float]:
    return {mode: float(pick(results["modes"][mode])) for mode in ("stock", "prefork")}


def latency_panels(results: dict[str, Any]) -> list[Panel]:
    """Cold LOADs per variant, and warm ResNet-18 latency against the in-process floor."""
    loads = [
        (
            f"{variant} LOAD",
            _by_mode(results, lambda m, v=variant: m["cold"][v]["load_s"]["median"]),
        )
        for variant in results["variants"]
    ]
    floor = results["floor"]
    warm = [
        (
            f"resnet_18 warm {q}",
            {"floor": floor[f"{q}_ms"], **_by_mode(results, lambda m, q=q: m["warm"][f"{q}_ms"])},
        )
        for q in ("p50", "p99")
    ]
    return [
        Panel("Cold LOAD (median)", "s", loads),
        Panel("Warm ResNet-18 latency, sequential", "ms", warm),
    ]


def memory_panels(results: dict[str, Any]) -> list[Panel]:
    """Memory per loaded ResNet-18, and how many fit the run's budget."""
    per_model = [
        (f"{label} per loaded resnet_18", _by_mode(results, lambda m, k=key: m["memory"][k]))
        for key, label in (("per_model_uss_mib", "USS"), ("per_model_pss_mib", "PSS"))
    ]
    fixed = [
        ("fixed USS (Java; + zygote)", _by_mode(results, lambda m: m["memory"]["fixed_uss_mib"]))
    ]
    fitted = [
        (
            f"resnet_18s within {results['budget_mib']:.0f} MiB",
            _by_mode(results, lambda m: m["memory"]["models_in_budget"]),
        )
    ]
    return [
        Panel("Private and proportional memory", "MiB", per_model + fixed),
        Panel("Models loaded before the budget is reached", "models", fitted),
    ]


def _traffic_row(results: dict[str, Any], key: str) -> tuple[str, dict[str, float]]:
    shape = results["shapes"][key]
    metric = shape["metric"]
    values = {label: float(shape[stack][metric]) for stack, label in TRAFFIC_LEGEND.items()}
    baseline = (results.get("baseline") or {}).get("shapes", {}).get(key)
    if baseline:
        values["baseline"] = float(baseline["ours"])
    return shape["label"], values


def traffic_panels(results: dict[str, Any]) -> list[Panel]:
    """MME traffic: throughput per shape and the parallel floor; sequential p50 and its floor."""
    shapes = results["shapes"]
    floors = results["floors"]
    rps = [_traffic_row(results, key) for key, shape in shapes.items() if shape["metric"] == "rps"]
    if "parallel" in floors:
        rps.append(
            (
                f"floor: {floors['parallel']['processes']} x 1-thread processes",
                {"floor": float(floors["parallel"]["rps"])},
            )
        )
    p50 = [
        _traffic_row(results, key) for key, shape in shapes.items() if shape["metric"] == "p50_ms"
    ]
    if p50 and "sequential" in floors:
        p50[0][1]["floor"] = float(floors["sequential"]["p50_ms"])
    return [
        Panel("Throughput, 16 keep-alive clients (higher is better)", "req/s", rps),
        Panel("Sequential latency p50, one client (lower is better)", "ms", p50),
    ]


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write latency.png and memory.png under ``out_dir``; return their paths."""
    return [
        render(latency_panels(results), out_dir / "latency.png"),
        render(memory_panels(results), out_dir / "memory.png"),
    ]
