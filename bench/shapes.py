"""The MME traffic shapes that `make bench` measures for the stock stack and for ours."""

from __future__ import annotations

from dataclasses import dataclass

CLIENTS = 16
MODEL_COUNTS = (1, 2, 4, 8)
RPS, P50 = "rps", "p50_ms"


@dataclass(frozen=True)
class Shape:
    """One kind of traffic: how many models are loaded, workers per model, clients at once.

    ``metric`` is what the shape is judged by: ``rps`` (higher is better) or ``p50_ms``
    (lower is better).
    """

    key: str
    label: str
    metric: str
    models: int = 1
    workers: int = 1
    clients: int = CLIENTS

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of ``metric`` is the better one."""
        return self.metric == RPS


SEQUENTIAL = Shape("seq", "1 model, sequential (1 client), p50", P50, clients=1)
LOADED = tuple(
    Shape(f"k{n}", f"{n} model{'s' if n > 1 else ''}, {CLIENTS} clients", RPS, models=n)
    for n in MODEL_COUNTS
)
TWO_WORKERS = Shape("w2", f"1 model, 2 workers, {CLIENTS} clients", RPS, workers=2)
SHAPES = (SEQUENTIAL, *LOADED, TWO_WORKERS)
# The goal compares 4 models with the parallel floor, so the floor takes turns in its rounds.
FLOOR_SHAPE = "k4"
# And 1 model with the batched floor (one process, every core, batches of FLOOR_BATCH images:
# what the gateway's batches can reach at best).
BATCHED_FLOOR_SHAPE = "k1"
FLOOR_BATCH = 8
