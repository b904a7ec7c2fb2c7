"""`make bench`'s MME traffic report: ratios, goals, baseline, tables and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench import traffic_report
from bench.plots import COLOURS
from bench.shapes import P50, SHAPES

# ours / stock per shape: 4 models and 2 workers meet their goals, 8 models does not.
OURS_OVER_STOCK = {"seq": 0.6, "k1": 1.6, "k2": 1.2, "k4": 1.2, "k8": 0.5, "w2": 1.0}
STOCK = {"seq": 33.0, "k1": 31.0, "k2": 40.0, "k4": 48.0, "k8": 48.0, "w2": 31.0}
PARALLEL_FLOOR_RPS = 60.0
BATCHED_FLOOR_RPS = 70.0
SEQUENTIAL_FLOOR_MS = 19.0


def _run(metric: str, value: float) -> dict[str, Any]:
    if metric == P50:
        return {"p50_ms": value, "p99_ms": value * 1.5, "n": 200}
    return {
        "clients": 16,
        "rps": value,
        "p50_ms": 16000 / value,
        "p99_ms": 20000 / value,
        "n": int(value * 4),
        "rounds_rps": [value],
    }


def _measured(scale: float = 1.0) -> dict[str, Any]:
    """A run as bench/run.py hands it to traffic_report.finish; ``scale`` scales ours."""
    shapes = {}
    for shape in SHAPES:
        stock = STOCK[shape.key]
        ours = stock * OURS_OVER_STOCK[shape.key] * (1 / scale if shape.metric == P50 else scale)
        shapes[shape.key] = {
            "label": shape.label,
            "metric": shape.metric,
            "models": shape.models,
            "workers": shape.workers,
            "clients": shape.clients,
            "stock": _run(shape.metric, stock),
            "ours": _run(shape.metric, ours),
        }
    return {
        "kind": traffic_report.KIND,
        "machine": {"cpu": "test", "cpus_available": 2},
        "revision": "abc1234",
        "environment": {},
        "options": {"seconds": 4.0, "rounds": 3, "sequential_requests": 200},
        "shapes": shapes,
        "seconds": 300.0,
        "note": "",
        "floors": {
            "sequential": {
                "p50_ms": SEQUENTIAL_FLOOR_MS,
                "p99_ms": 21.0,
                "n": 200,
                "processes": 1,
                "threads": 2,
            },
            "parallel": {
                "rps": PARALLEL_FLOOR_RPS,
                "processes": 2,
                "threads": 1,
                "per_process_rps": [30.0, 30.0],
                "rounds_rps": [PARALLEL_FLOOR_RPS],
            },
            "batched": {
                "rps": BATCHED_FLOOR_RPS,
                "processes": 1,
                "threads": 2,
                "batch": 8,
                "per_process_rps": [BATCHED_FLOOR_RPS],
                "rounds_rps": [BATCHED_FLOOR_RPS],
            },
        },
    }


def _verdicts(results: dict[str, Any]) -> dict[str, bool | None]:
    return {goal["goal"]: goal["passed"] for goal in results["goals"]}


def _saved_baseline(tmp_path: Path, scale: float = 1.0) -> dict[str, Any]:
    written = traffic_report.write(traffic_report.finish(_measured(scale), None), tmp_path)
    return traffic_report.load_baseline(written[0])


def test_ratios_are_ours_over_stock_floor_and_baseline() -> None:
    results = traffic_report.finish(_measured(), None)

    k4, seq = results["ratios"]["k4"], results["ratios"]["seq"]
    assert k4["stock"] == pytest.approx(1.2)
    assert k4["floor"] == pytest.approx(48.0 * 1.2 / PARALLEL_FLOOR_RPS)
    assert k4["baseline"] is None
    assert seq["stock"] == pytest.approx(0.6)  # latency: below 1 is better
    assert seq["floor"] == pytest.approx(33.0 * 0.6 / SEQUENTIAL_FLOOR_MS)
    assert results["ratios"]["k1"]["batched"] == pytest.approx(31.0 * 1.6 / BATCHED_FLOOR_RPS)
    assert seq["batched"] is None  # a latency is not judged against images per second


def test_goals_pass_and_fail_in_the_direction_of_their_metric() -> None:
    verdicts = _verdicts(traffic_report.finish(_measured(), None))

    assert verdicts["4 models, 16 clients: >= 1.1x the stock stack"] is True
    assert verdicts["4 models, 16 clients: >= 0.9x the parallel in-process floor"] is True
    assert verdicts["1 model, 2 workers, 16 clients: >= the stock stack"] is True
    assert verdicts["8 models, 16 clients: never slower than the stock stack"] is False
    assert verdicts["1 model, sequential (1 client), p50: never slower than the stock stack"]
    batched = "1 model, 16 clients: >= 0.8x the batched in-process floor"
    assert verdicts[batched] is False  # 49.6 of 70 images/s
    older = _measured()
    del older["floors"]["batched"]  # a run from before the batched floor
    assert _verdicts(traffic_report.finish(older, None))[batched] is None


def test_without_a_baseline_the_today_goals_are_not_judged() -> None:
    results = traffic_report.finish(_measured(), None)

    today = [g for g in results["goals"] if "today" in g["goal"]]
    assert len(today) == 2
    assert all(g["passed"] is None and g["ratio"] is None for g in today)
    assert "pass `--baseline`" in traffic_report.markdown(results)


def test_a_run_is_judged_against_the_baseline_it_is_given(tmp_path: Path) -> None:
    baseline = _saved_baseline(tmp_path)

    slower = traffic_report.finish(_measured(scale=0.9), baseline)
    same = traffic_report.finish(_measured(), baseline)

    assert slower["ratios"]["k1"]["baseline"] == pytest.approx(0.9)
    assert slower["ratios"]["seq"]["baseline"] == pytest.approx(1 / 0.9)
    assert not any(g["passed"] for g in slower["goals"] if "today" in g["goal"])
    assert all(g["passed"] for g in same["goals"] if "today" in g["goal"])
    assert slower["baseline"]["revision"] == "abc1234"


def test_a_file_that_is_not_a_traffic_run_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "results.json"
    other.write_text(json.dumps({"modes": {}}))

    with pytest.raises(ValueError, match=r"not an mme-traffic\.json"):
        traffic_report.load_baseline(other)
    with pytest.raises(ValueError, match="cannot read"):
        traffic_report.load_baseline(tmp_path / "missing.json")


def test_the_table_has_every_shape_and_every_goal(tmp_path: Path) -> None:
    results = traffic_report.finish(_measured(scale=0.9), _saved_baseline(tmp_path))

    table = traffic_report.markdown(results)

    for shape in SHAPES:
        assert f"| {shape.label} |" in table
    assert table.count("**FAIL**") == sum(g["passed"] is False for g in results["goals"])
    assert "| 4 models, 16 clients: >= 1.1x the stock stack | 1.08x | **FAIL** |" in table
    assert "The stock stack now / in the baseline, median over shapes: 1.00x" in table


def _colours(path: Path) -> set[tuple[int, int, int]]:
    image = Image.open(path).convert("RGB")
    return {colour for _count, colour in image.getcolors(maxcolors=1 << 16) or []}


def test_a_run_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    results = traffic_report.finish(_measured(), _saved_baseline(tmp_path / "before"))

    written = traffic_report.write(results, tmp_path)

    assert [p.name for p in written] == ["mme-traffic.json", "mme-traffic.md", "mme-traffic.png"]
    assert json.loads(written[0].read_text())["goals"] == results["goals"]
    assert Image.open(written[2]).format == "PNG"
    assert {COLOURS[k] for k in ("stock stack", "mme serve", "floor", "baseline")} <= _colours(
        written[2]
    )
