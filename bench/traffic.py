"""`make bench`, MME traffic: the stock stack beside `mme serve`, and the in-process floors.

Both stacks run at the same time on 127.0.0.1 and take turns shape by shape and round by
round (stock, ours, then ours, stock...), so that a busy machine slows both alike:

1. one worker per model: sequential latency of one model (against the one-process floor),
   then 16 keep-alive clients spread over 1, 2, 4 and 8 loaded models (the 4-model rounds
   take turns with the parallel floor: one one-thread process per core; the 1-model rounds
   with the batched floor: the one process with every core, batches of 8 images);
2. both servers again with two workers per model: 16 clients on one model.

Each server first answers JIT_WARM_UP_REQUESTS no-op requests (Java compiles MMS's request
path), and each model a few requests (TorchScript optimises its graph), before anything
is measured. The numbers come back raw; bench/traffic_report.py judges them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.floor import FloorProcesses
from bench.models import TORCHSCRIPT_WARM_UP_CALLS
from bench.rounds import interleaved
from bench.scenarios import JSON, Payload, throughput, warm_latency, warm_up_jit
from bench.server import BenchServer, mme_serve
from bench.shapes import (
    BATCHED_FLOOR_SHAPE,
    FLOOR_BATCH,
    FLOOR_SHAPE,
    LOADED,
    SEQUENTIAL,
    TWO_WORKERS,
    Shape,
)
from bench.stock_server import stock_stack

STACKS = ("stock", "ours")
NOOP = Payload(b'{"ping": 1}', JSON)


@dataclass(frozen=True)
class TrafficOptions:
    """How long and how often each shape is measured."""

    seconds: float
    rounds: int
    sequential_requests: int


@dataclass(frozen=True)
class Models:
    """The model folders both stacks LOAD, and what the user's model is invoked with."""

    user_model: Path
    noop: Path
    image: Payload


def measure(options: TrafficOptions, root: Path, models: Models) -> dict[str, Any]:
    """Every shape for both stacks, and both floors: ``{"shapes": ..., "floors": ...}``."""
    cpus = len(os.sched_getaffinity(0))
    image = models.image
    shapes: dict[str, dict[str, Any]] = {}
    floors: dict[str, dict[str, Any]] = {}
    _say("MME traffic: starting the in-process floors ...")
    with (
        FloorProcesses(
            models.user_model, image.body, image.content_type, 1, cpus
        ) as sequential_floor,
        FloorProcesses(
            models.user_model, image.body, image.content_type, cpus, 1
        ) as parallel_floor,
        _stacks(root, models, workers=1) as servers,
    ):
        names = _load(servers, models, [], SEQUENTIAL.models)
        _say(f"  {SEQUENTIAL.label} ...")
        latency = warm_latency(
            {
                **{
                    stack: partial(server.invoke, names[0], image.body, image.content_type)
                    for stack, server in servers.items()
                },
                "floor": sequential_floor.once,
            },
            options.sequential_requests,
        )
        shapes[SEQUENTIAL.key] = _shape_result(SEQUENTIAL, latency)
        floors["sequential"] = {**latency["floor"], "processes": 1, "threads": cpus}
        for shape in LOADED:
            names = _load(servers, models, names, shape.models)
            extra = {}
            if shape.key == FLOOR_SHAPE:
                extra["parallel"] = partial(parallel_floor.throughput, options.seconds)
            if shape.key == BATCHED_FLOOR_SHAPE:
                extra["batched"] = partial(
                    sequential_floor.throughput, options.seconds, FLOOR_BATCH
                )
            medians = _rounds(shape, servers, names, image, options, extra)
            shapes[shape.key] = _shape_result(shape, medians)
            floors.update({name: medians[name] for name in extra})
    with _stacks(root, models, workers=TWO_WORKERS.workers) as servers:
        names = _load(servers, models, [], TWO_WORKERS.models)
        shapes[TWO_WORKERS.key] = _shape_result(
            TWO_WORKERS, _rounds(TWO_WORKERS, servers, names, image, options, {})
        )
    return {"shapes": shapes, "floors": floors}


@contextmanager
def _stacks(root: Path, models: Models, workers: int) -> Iterator[dict[str, BenchServer]]:
    """The stock stack and `mme serve`, ``workers`` per model, warmed up; stopped on exit."""
    tag = f"traffic-w{workers}"
    # Left unset for one worker: what users get when they set nothing.
    setting = None if workers == 1 else workers
    env = {} if setting is None else {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    servers = {
        "stock": stock_stack(root, tag, setting),
        "ours": mme_serve(None, root / "models", root, tag, env),
    }
    begun: list[BenchServer] = []
    try:
        for stack, server in servers.items():
            _say(f"  starting {stack} ({server.mode}), {workers} worker(s) per model ...")
            begun.append(server)
            server.start()
            server.load("noop", models.noop)
            warm_up_jit(server, "noop", NOOP)
            server.unload("noop")  # the shapes have exactly the models they name
        yield servers
    finally:
        # The stock stack first: one stock server at a time runs on the machine.
        for server in begun:
            server.stop()


def _load(
    servers: dict[str, BenchServer], models: Models, names: list[str], count: int
) -> list[str]:
    """LOAD the user's model under new names until ``count`` are loaded; all the names."""
    new = [f"model-{index}" for index in range(len(names), count)]
    if new:
        _say(f"  loading {len(new)} model(s) into each stack ...")
    for server in servers.values():
        for name in new:
            server.load(name, models.user_model)
            for _ in range(TORCHSCRIPT_WARM_UP_CALLS):
                server.invoke(name, models.image.body, models.image.content_type)
    return [*names, *new]


def _rounds(
    shape: Shape,
    servers: dict[str, BenchServer],
    names: list[str],
    image: Payload,
    options: TrafficOptions,
    extra: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Both stacks (and ``extra`` targets) in turns for ``options.rounds`` rounds."""
    targets = {
        stack: partial(throughput, server, names, image, shape.clients, options.seconds)
        for stack, server in servers.items()
    }
    _say(f"  {shape.label} ...")
    return interleaved({**targets, **extra}, options.rounds, _progress)


def _progress(target: str, turn: int, run: dict[str, Any]) -> None:
    _say(f"    round {turn + 1}, {target}: {run['rps']:.1f} req/s")


def _say(message: str) -> None:
    """Progress on the console, with the clock: the run takes minutes."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _shape_result(shape: Shape, measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "label": shape.label,
        "metric": shape.metric,
        "models": shape.models,
        "workers": shape.workers,
        "clients": shape.clients,
        **{stack: measured[stack] for stack in STACKS},
    }
