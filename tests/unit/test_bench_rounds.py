"""`make bench`'s rounds: targets take turns, and the median round is what is reported."""

from __future__ import annotations

from typing import Any

from bench.rounds import interleaved, turn_order
from bench.stats import median_run


def test_each_target_goes_first_in_its_turn() -> None:
    keys = ["stock", "ours", "floor"]

    orders = [turn_order(keys, turn) for turn in range(4)]

    assert orders == [
        ["stock", "ours", "floor"],
        ["ours", "floor", "stock"],
        ["floor", "stock", "ours"],
        ["stock", "ours", "floor"],
    ]


def test_two_targets_alternate() -> None:
    assert [turn_order(["stock", "ours"], turn)[0] for turn in range(3)] == [
        "stock",
        "ours",
        "stock",
    ]


def test_the_median_round_is_kept_whole_with_every_rounds_rps() -> None:
    rounds = [
        {"rps": 30.0, "p50_ms": 1.0},
        {"rps": 10.0, "p50_ms": 3.0},
        {"rps": 20.0, "p50_ms": 2.0},
    ]

    assert median_run(rounds) == {"rps": 20.0, "p50_ms": 2.0, "rounds_rps": [30.0, 10.0, 20.0]}


def test_interleaved_runs_every_target_once_per_round_in_turns() -> None:
    calls: list[str] = []
    heard: list[tuple[str, int]] = []

    def target(name: str, rps: float) -> Any:
        def run() -> dict[str, float]:
            calls.append(name)
            return {"rps": rps + len(calls)}

        return run

    medians = interleaved(
        {"a": target("a", 0.0), "b": target("b", 100.0)},
        3,
        lambda key, turn, _run: heard.append((key, turn)),
    )

    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert heard == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert medians["a"]["rounds_rps"] == [1.0, 4.0, 5.0]
    assert medians["a"]["rps"] == 4.0
    assert medians["b"]["rps"] == 103.0
