"""Measurements repeated in rounds, the targets taking turns, so a busy machine slows all alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.stats import median_run


def turn_order(keys: Sequence[str], turn: int) -> list[str]:
    """``keys`` rotated by ``turn``: each goes first in its turn, none always follows another."""
    shift = turn % len(keys)
    return [*keys[shift:], *keys[:shift]]


def interleaved(
    targets: dict[str, Callable[[], dict[str, Any]]],
    rounds: int,
    report: Callable[[str, int, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each target's median round (``median_run``) of ``rounds`` rounds taken in turns.

    A target returns one run with its ``rps``; ``report(target, round, run)`` hears of
    each run as it ends (progress on the console).
    """
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in targets}
    for turn in range(rounds):
        for key in turn_order(list(targets), turn):
            runs[key].append(targets[key]())
            if report is not None:
                report(key, turn, runs[key][-1])
    return {key: median_run(done) for key, done in runs.items()}
