"""`make bench`'s PNG plots: bars to scale, every mode drawn, and written beside the tables."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from bench import report
from bench.plots import COLOURS, LABEL_WIDTH, Panel, render

COMMITTED = Path(__file__).resolve().parents[2] / "bench" / "results" / "results.json"


def _bar_lengths(path: Path, colour: tuple[int, int, int]) -> list[int]:
    """The length in pixels of each bar of ``colour``, top to bottom."""
    image = Image.open(path).convert("RGB")
    lengths = []
    for y in range(image.height):
        row = [image.getpixel((x, y)) for x in range(LABEL_WIDTH, image.width)]
        length = next((i for i, pixel in enumerate(row) if pixel != colour), len(row))
        if length and (not lengths or lengths[-1][0] != y - 1):
            lengths.append((y, length))
        elif length:
            lengths[-1] = (y, length)
    return [length for _, length in lengths]


def test_bars_are_drawn_to_scale(tmp_path: Path) -> None:
    panel = Panel(
        "LOAD", "s", [("a", {"stock": 4.0, "prefork": 1.0}), ("b", {"stock": 2.0, "prefork": 0.5})]
    )

    path = render([panel], tmp_path / "chart.png")

    stock, prefork = _bar_lengths(path, COLOURS["stock"]), _bar_lengths(path, COLOURS["prefork"])
    assert len(stock) == len(prefork) == 2
    assert abs(stock[0] - 2 * stock[1]) <= 1
    assert abs(stock[0] - 4 * prefork[0]) <= 2
    assert abs(prefork[0] - 2 * prefork[1]) <= 1


def test_a_run_writes_its_tables_and_both_plots(tmp_path: Path) -> None:
    results = json.loads(COMMITTED.read_text())

    written = report.write(results, tmp_path)

    assert [p.name for p in written] == ["results.json", "results.md", "latency.png", "memory.png"]
    for png in written[2:]:
        image = Image.open(png)
        assert image.format == "PNG"
        assert all(_bar_lengths(png, COLOURS[mode]) for mode in ("stock", "prefork"))
    assert _bar_lengths(written[2], COLOURS["floor"])  # the in-process floor is shown
