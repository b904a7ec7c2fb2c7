"""The physical floor: the model's own decode, preprocess, forward and postprocess, in-process.

``InProcess`` runs the user's functions in the calling process. ``FloorProcesses`` runs them
in child processes with a chosen torch thread count each, so that the floor never shares a
process (nor its OpenMP threads) with the benchmark's clients: one process with every core
is the sequential-latency floor; one one-thread process per core, all at once, is the
throughput floor without batching; one process with every core running batches (each image
decoded and preprocessed, one forward pass, each image's answer written) is the batched
throughput floor.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from bench.models import TORCHSCRIPT_WARM_UP_CALLS
from mme.settings import Settings

START_DELAY_S = 0.2  # lets every process receive its order before the common start


class InProcess:
    """The model's own functions, called in this process: what serving adds nothing to.

    ``threads``: torch's intra-op threads; None gives the thread count a worker gets by
    default (MME_NUM_THREADS), so that the only difference from a served request is the
    serving itself.
    """

    def __init__(
        self, model_dir: Path, body: bytes, content_type: str, threads: int | None = None
    ) -> None:
        torch.set_num_threads(threads or Settings.from_env().num_threads)
        self._code = _user_module(model_dir / "code" / "inference.py")
        self._model = self._code.model_fn(str(model_dir))
        self._body, self._content_type = body, content_type

    def once(self) -> float:
        """Decode, preprocess, forward and postprocess once; the seconds it took."""
        started = time.monotonic()
        prediction = self._code.predict_fn(
            self._code.input_fn(self._body, self._content_type), self._model
        )
        self._code.output_fn(prediction, "application/json")
        return time.monotonic() - started

    def batch(self, size: int) -> float:
        """``size`` images as one batch, as a served batch runs (the model's batch contract:
        inputs concatenated, one row of the prediction per image); the seconds it took."""
        started = time.monotonic()
        inputs = [self._code.input_fn(self._body, self._content_type) for _ in range(size)]
        prediction = self._code.predict_fn(torch.cat(inputs), self._model)
        for row in range(size):
            self._code.output_fn(prediction[row : row + 1], "application/json")
        return time.monotonic() - started

    def until(self, start_at: float, deadline: float, batch: int = 1) -> dict[str, float]:
        """Call ``once`` (or :meth:`batch` of ``batch`` images) back to back from
        ``start_at`` (monotonic) while before ``deadline``; the images answered."""
        time.sleep(max(0.0, start_at - time.monotonic()))
        calls = 0
        while time.monotonic() < deadline:
            if batch > 1:
                self.batch(batch)
            else:
                self.once()
            calls += batch
        return {"calls": calls, "seconds": time.monotonic() - start_at}


def _user_module(path: Path) -> Any:
    sys.path.insert(0, os.fspath(path.parent))
    spec = importlib.util.spec_from_file_location("bench_floor_inference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(
    connection: Connection, model_dir: Path, body: bytes, content_type: str, threads: int
) -> None:
    """A floor process: load the model, then answer orders until the parent goes."""
    try:
        floor = InProcess(model_dir, body, content_type, threads)
        for _ in range(TORCHSCRIPT_WARM_UP_CALLS):
            floor.once()
        connection.send(("ok", None))
    except Exception as exc:  # the parent raises it; a traceback here would be lost
        connection.send(("error", repr(exc)))
        return
    while True:
        try:
            order, *arguments = connection.recv()
        except EOFError:  # the parent ended (even killed): so does the floor
            return
        try:
            answer = floor.once() if order == "once" else floor.until(*arguments)
            connection.send(("ok", answer))
        except Exception as exc:
            connection.send(("error", repr(exc)))


class FloorProcesses:
    """``count`` child processes running the user's pipeline, ``threads`` torch threads each.

    A context manager: the processes end on exit, also on errors.
    """

    def __init__(
        self, model_dir: Path, body: bytes, content_type: str, count: int, threads: int
    ) -> None:
        self.count, self.threads = count, threads
        # spawn, not fork: a fresh interpreter, as a worker is, and no copy of our threads.
        context = multiprocessing.get_context("spawn")
        self._connections: list[Connection] = []
        self._processes: list[Any] = []
        try:
            for _ in range(count):
                parent, child = context.Pipe()
                process = context.Process(
                    target=_child, daemon=True, args=(child, model_dir, body, content_type, threads)
                )
                process.start()
                child.close()
                self._connections.append(parent)
                self._processes.append(process)
            for connection in self._connections:
                _answer(connection)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> FloorProcesses:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def once(self) -> float:
        """One call in the first process; the seconds it took there (no pipe time counted)."""
        self._connections[0].send(("once",))
        return float(_answer(self._connections[0]))

    def throughput(self, seconds: float, batch: int = 1) -> dict[str, Any]:
        """Every process calls back to back for ``seconds``, all at once, ``batch`` images
        a call; images per second."""
        start_at = time.monotonic() + START_DELAY_S
        for connection in self._connections:
            connection.send(("until", start_at, start_at + seconds, batch))
        runs = [_answer(connection) for connection in self._connections]
        per_process = [run["calls"] / run["seconds"] for run in runs]
        return {
            "rps": sum(per_process),
            "per_process_rps": per_process,
            "processes": self.count,
            "threads": self.threads,
            "batch": batch,
        }

    def close(self) -> None:
        """End every process (closing its pipe ends it; terminate what lingers)."""
        for connection in self._connections:
            connection.close()
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        self._connections, self._processes = [], []


def _answer(connection: Connection) -> Any:
    try:
        status, value = connection.recv()
    except EOFError:
        raise RuntimeError("a floor process ended without answering (see its output)") from None
    if status != "ok":
        raise RuntimeError(f"floor process failed: {value}")
    return value
