"""bench/density_report.py: the cost per model, the goals, the tables and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from bench import density_report
from bench.density import checkpoints


def _census(processes: int, threads: int, fds: int, uss: float) -> dict[str, Any]:
    return {
        "roles": {
            "worker": {
                "processes": processes,
                "threads": threads,
                "fds": fds,
                "uss_mib": uss,
                "pss_mib": uss,
                "maps": 0,
            }
        },
        "total_processes": processes,
        "total_threads": threads,
        "total_fds": fds,
        "total_uss_mib": uss,
        "total_pss_mib": uss,
    }


def _point(models: int, uss: float, load_s: float, invoke_ms: float) -> dict[str, Any]:
    latency = {"p50_ms": invoke_ms, "p99_ms": invoke_ms * 2, "n": 10}
    return {
        "models": models,
        "loads": models,
        "load_p50_s": load_s,
        "load_p90_s": load_s,
        "first_invoke": latency,
        "warm_invoke": latency,
        "census": _census(3 + 2 * models, 40 + 10 * models, 60 + 23 * models, uss),
    }


def _results(last_models: int = 1000, error: str | None = None) -> dict[str, Any]:
    points = [
        _point(1, 600.0, 0.06, 2.0),
        _point(10, 681.0, 0.07, 2.0),
        _point(last_models, 600.0 + 9 * (last_models - 1), 0.08, 3.0),
    ]
    return {
        "machine": {
            "cpus_available": 2,
            "cpu": "test",
            "memory_gib": 24,
            "python": "3",
            "torch": "2",
        },
        "revision": "abc",
        "seconds": 60.0,
        "note": "A note.",
        "modes": {
            "prefork": {
                "idle": _census(3, 40, 60, 500.0),
                "points": points,
                "error": error,
                "unload": {"p50_ms": 50.0},
                "after_unload": _census(3, 40, 60, 510.0),
            }
        },
    }


def test_a_model_costs_what_the_census_grew_by_beyond_the_first() -> None:
    results = _results()
    mode = results["modes"]["prefork"]
    cost = density_report.per_model(mode, mode["points"][-1])
    assert cost == {"uss_mib": 9.0, "processes": 2.0, "threads": 10.0, "fds": 23.0}


def test_the_goals_are_judged_at_a_thousand_models_and_without_errors() -> None:
    assert all(met for _goal, _measured, met in density_report.goals(_results()))
    short = density_report.goals(_results(last_models=100))
    assert [met for *_, met in short] == [True, False, False, True]  # 100 is not 1,000
    failed = density_report.goals(_results(error="LOAD of tiny-7 failed"))
    assert failed[-1] == ("no error", "LOAD of tiny-7 failed", False)


def test_the_report_has_a_row_per_checkpoint_and_a_plot(tmp_path: Path) -> None:
    written = density_report.write(_results(), tmp_path)
    text = written[1].read_text()
    assert "| 1,000 | 2,003 | 10,040 | 23,060 | 9,591 | 9.00 | 2.00 | 10.00 | 23.00 |" in text
    assert "| no error | none | yes |" in text
    with Image.open(written[2]) as plot:
        assert plot.size[0] == density_report.WIDTH
    assert checkpoints(1000) == [1, 10, 50, 100, 250, 500, 1000]
    assert checkpoints(30) == [1, 10, 30]
