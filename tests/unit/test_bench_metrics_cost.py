"""bench/metrics_cost.py: the page that `make bench` writes from a run's results."""

from __future__ import annotations

from typing import Any

from bench.metrics_cost import markdown


def _results() -> dict[str, Any]:
    return {
        "machine": {"cpus_available": 2},
        "revision": "abc1234",
        "options": {"rounds": 2, "requests": 300, "mode": "stock"},
        "note": "A note.",
        "seconds": 12.0,
        "servers": {
            "metrics on": {"p50_ms": 1.5, "p99_ms": 4.25, "round_medians_s": [0.0015, 0.0017]},
            "metrics off": {"p50_ms": 1.25, "p99_ms": 3.5, "round_medians_s": [0.0014, 0.0012]},
        },
        "differences_us": [100.0, 500.0],
        "scrape_p50_ms": 2.5,
    }


def test_the_page_gives_each_server_its_latency_and_the_median_difference() -> None:
    page = markdown(_results())

    assert "2 interleaved rounds of 300 sequential invocations" in page
    assert "(stock workers)" in page
    assert "| metrics on | 1.500 | 4.250 | 1.600 |" in page
    assert "| metrics off | 1.250 | 3.500 | 1.300 |" in page
    assert "+100, +500; median +300 µs" in page
    assert "median 2.50 ms" in page
    assert "revision abc1234; 12 s. A note." in page
