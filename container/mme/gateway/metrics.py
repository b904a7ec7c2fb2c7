"""Per-model and per-server metrics of `mme serve`, served as Prometheus text on its own port.

SageMaker scrapes a container's Prometheus endpoint (``GET /metrics`` on the serving port
unless ``ContainerMetricsConfig`` says otherwise) and publishes what it reads to
CloudWatch, whose own multi-model metrics are per endpoint only. The gateway sees every
request, so it measures them where they pass (:meth:`GatewayMetrics.measure`, around the
gateway's answer; :meth:`GatewayMetrics.to_workers`, around the scheduler's sends to MMS;
the scheduler's ``on_wait``, as it takes requests off its queue) and answers the metrics
path itself; MMS is not involved, so both worker modes report the same metrics.

* Every per-model series has two labels: ``model_name``, the name the model was LOADed
  with (under SageMaker an opaque id), and ``target_model``, the TargetModel its clients
  use, learnt from the first invocation that carries ``X-Amzn-SageMaker-Target-Model``.
  Until one does, ``target_model`` is the ``model_name``.
* A model's series exist from its LOAD until the first scrape after its UNLOAD (or after a
  LOAD that left it unloaded): that scrape reports its final numbers (its last requests,
  ``mme_model_unloads_total`` 1, ``mme_model_loaded`` 0), and the next one no longer has
  them, so thousands of models passing through leave nothing behind. An unloaded model
  that no scrape comes for is dropped after RETIRED_KEEP_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from mme.gateway.app import model_of
from mme.gateway.http import Request, Response, error_response
from mme.gateway.management import LoadRequestError, parse_load
from mme.gateway.model_stats import Histogram, ModelStats
from mme.gateway.scheduler import Scheduler
from mme.gateway.worker_usage import WorkerUsage, restarts, usage
from mme.prometheus_text import CONTENT_TYPE, render

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

TARGET_MODEL_HEADER = b"x-amzn-sagemaker-target-model"
RETIRED_KEEP_S = 600.0  # twice SageMaker's longest publish interval (300 s)
LABELS = ["target_model", "model_name"]


@dataclass(frozen=True)
class _Snapshot:
    """What one scrape reports, copied on the event loop."""

    models: list[ModelStats]
    in_flight: int
    busy: int
    budget: tuple[int, int] | None  # (threads in use, cores)
    queue_wait: Histogram
    unloads: int
    load_failures: int
    retired_restarts: int


class GatewayMetrics:
    """Counts what passes through the gateway and answers ``GET <path>`` with it."""

    def __init__(self, path: str, server_temp_dir: str, workers_per_model: int) -> None:
        self.path = path
        self._temp_dir = server_temp_dir
        self._workers = workers_per_model
        self._scheduler: Scheduler | None = None
        self._models: dict[str, ModelStats] = {}
        self._retired: dict[str, float] = {}  # model name -> when; oldest first
        self._in_flight = 0  # invocations taken and not answered yet
        self._busy = 0  # requests (or batches) sent to a worker and not answered yet
        self._queue_wait = Histogram()
        self._unloads = 0
        self._load_failures = 0
        self._retired_restarts = 0  # the worker restarts of models unloaded already

    def watch(self, scheduler: Scheduler) -> None:
        """Report the scheduler's queue waits and its CPU budget."""
        self._scheduler = scheduler
        scheduler.on_wait = self._queue_wait.observe

    async def measure(self, request: Request, answer: Handler) -> Response:
        """Answer ``request`` with ``answer``, counting invocations, LOADs and UNLOADs;
        answer the metrics path itself."""
        path = request.path
        if not path.startswith("/models"):
            if path == self.path and request.method == "GET":
                return await self._scrape()
            return await answer(request)
        if request.method == "POST" and (name := model_of(path, "/invoke")):
            return await self._invocation(request, name, answer)
        if request.method == "POST" and path == "/models":
            return await self._load(request, answer)
        if request.method == "DELETE" and (name := model_of(path)):
            return await self._unload(request, name, answer)
        return await answer(request)

    def to_workers(self, send: Handler) -> Handler:
        """``send`` (what the scheduler sends to MMS), counting a busy worker while it runs."""

        async def sent(request: Request) -> Response:
            self._busy += 1
            try:
                return await send(request)
            finally:
                self._busy -= 1

        return sent

    async def _invocation(self, request: Request, name: str, answer: Handler) -> Response:
        stats = self._models.get(name)
        if stats is None:
            return await answer(request)  # not loaded: MMS answers 404, under no model
        if not stats.target_model:
            target = request.header(TARGET_MODEL_HEADER)
            if target:
                stats.target_model = target.decode("utf-8", "replace")
        started = time.perf_counter()
        self._in_flight += 1
        try:
            response = await answer(request)
        finally:
            self._in_flight -= 1
        stats.answered(response.status, time.perf_counter() - started)
        return response

    async def _load(self, request: Request, answer: Handler) -> Response:
        try:
            name = parse_load(request).model_name
        except LoadRequestError:
            return await answer(request)  # 400, and no model to count it under
        started = time.perf_counter()
        response = await answer(request)
        seconds = time.perf_counter() - started
        stats = self._models.setdefault(name, ModelStats(name))
        if response.status == 200 or response.status == 409:  # 409: it is loaded already
            if response.status == 200:
                stats.load_seconds = seconds
            stats.loaded = True
            self._retired.pop(name, None)
            return response
        stats.load_seconds = seconds
        stats.load_failures[response.status] = stats.load_failures.get(response.status, 0) + 1
        self._load_failures += 1
        if not stats.loaded:
            self._retire(name)
        return response

    async def _unload(self, request: Request, name: str, answer: Handler) -> Response:
        stats = self._models.get(name)
        # Read before the UNLOAD, which forgets the model's worker records.
        restarted = restarts(self._temp_dir, name, self._workers) if stats else 0
        response = await answer(request)
        if stats is not None and response.status == 200:
            stats.unloads += 1
            stats.final_restarts += restarted
            self._retired_restarts += restarted
            self._unloads += 1
            stats.loaded = False
            self._retire(name)
        return response

    def _retire(self, name: str) -> None:
        now = time.monotonic()
        self._retired.pop(name, None)
        self._retired[name] = now
        for old, since in list(self._retired.items()):
            if since > now - RETIRED_KEEP_S:
                break
            del self._retired[old]
            self._models.pop(old, None)

    # the scrape

    async def _scrape(self) -> Response:
        snapshot = self._snapshot()
        try:
            # Reading /proc for every model and writing the text take a while with many
            # models: not on the loop that answers the invocations.
            body = await asyncio.get_running_loop().run_in_executor(None, self._render, snapshot)
        except Exception:
            logger.exception("the metrics could not be collected")
            return error_response(
                HTTPStatus.INTERNAL_SERVER_ERROR, "the metrics could not be collected; see the log"
            )
        return Response(200, [(b"Content-Type", CONTENT_TYPE.encode("ascii"))], body)

    def _snapshot(self) -> _Snapshot:
        models = [stats.copy() for stats in self._models.values()]
        for name in self._retired:
            self._models.pop(name, None)
        self._retired.clear()
        scheduler = self._scheduler
        budget = (
            (scheduler.threads_in_use, scheduler.cores) if scheduler and scheduler.cores else None
        )
        return _Snapshot(
            models,
            self._in_flight,
            self._busy,
            budget,
            self._queue_wait.copy(),
            self._unloads,
            self._load_failures,
            self._retired_restarts,
        )

    def _render(self, snapshot: _Snapshot) -> bytes:
        usages = {
            stats.model_name: usage(self._temp_dir, stats.model_name, self._workers)
            for stats in snapshot.models
            if stats.loaded
        }
        return render(
            [*_model_families(snapshot.models, usages), *_server_families(snapshot, usages)]
        )


def _model_families(models: list[ModelStats], usages: dict[str, WorkerUsage]) -> list[Metric]:
    requests = CounterMetricFamily(
        "mme_model_requests", "invocations of the model answered", labels=LABELS
    )
    errors = CounterMetricFamily(
        "mme_model_errors",
        "invocations of the model answered with a 4xx or 5xx status, by status",
        labels=[*LABELS, "code"],
    )
    latency = HistogramMetricFamily(
        "mme_model_request_duration_seconds",
        "time from an invocation's arrival at the "
        "container until its answer, the wait for CPU included",
        labels=LABELS,
    )
    load_time = GaugeMetricFamily(
        "mme_model_load_duration_seconds",
        "time its last LOAD took, loaded or failed",
        labels=LABELS,
    )
    load_failures = CounterMetricFamily(
        "mme_model_load_failures",
        "LOADs of the model that failed, by status",
        labels=[*LABELS, "code"],
    )
    unloads = CounterMetricFamily("mme_model_unloads", "UNLOADs of the model", labels=LABELS)
    loaded = GaugeMetricFamily("mme_model_loaded", "1 while the model is loaded", labels=LABELS)
    workers = GaugeMetricFamily(
        "mme_model_workers", "live worker processes of the model", labels=LABELS
    )
    memory = GaugeMetricFamily(
        "mme_model_resident_memory_bytes",
        "resident memory of the model's processes (pages "
        "shared with other processes count in each)",
        labels=LABELS,
    )
    restarted = CounterMetricFamily(
        "mme_model_worker_restarts",
        "workers of the model that MMS started again after one died",
        labels=LABELS,
    )
    for stats in models:
        labels = [stats.label, stats.model_name]
        current = usages.get(stats.model_name, WorkerUsage(0, 0, 0))
        requests.add_metric(labels, stats.requests)
        for code, count in sorted(stats.errors.items()):
            errors.add_metric([*labels, str(code)], count)
        latency.add_metric(labels, stats.latency.buckets(), stats.latency.total)
        if stats.load_seconds is not None:
            load_time.add_metric(labels, stats.load_seconds)
        for code, count in sorted(stats.load_failures.items()):
            load_failures.add_metric([*labels, str(code)], count)
        unloads.add_metric(labels, stats.unloads)
        loaded.add_metric(labels, int(stats.loaded))
        workers.add_metric(labels, current.workers)
        memory.add_metric(labels, current.memory_bytes)
        restarted.add_metric(labels, stats.final_restarts + current.restarts)
    return [
        requests,
        errors,
        latency,
        load_time,
        load_failures,
        unloads,
        loaded,
        workers,
        memory,
        restarted,
    ]


def _server_families(snapshot: _Snapshot, usages: dict[str, WorkerUsage]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "mme_loaded_models",
        "models loaded now",
        value=sum(stats.loaded for stats in snapshot.models),
    )
    yield GaugeMetricFamily(
        "mme_requests_in_flight",
        "invocations taken and not answered yet (waiting for CPU or at a worker)",
        value=snapshot.in_flight,
    )
    yield GaugeMetricFamily(
        "mme_busy_workers", "workers answering a request (or a batch) now", value=snapshot.busy
    )
    if snapshot.budget is not None:
        in_use, cores = snapshot.budget
        yield GaugeMetricFamily(
            "mme_cpu_budget_threads",
            "torch threads the CPU budget shares among the workers (MME_CPU_BUDGET)",
            value=cores,
        )
        yield GaugeMetricFamily(
            "mme_cpu_budget_threads_in_use",
            "threads of the CPU budget granted to invocations now",
            value=in_use,
        )
    wait = HistogramMetricFamily(
        "mme_queue_wait_seconds",
        "time an invocation waited in the "
        "gateway's queue for a free worker and its grant of the CPU "
        "budget",
    )
    wait.add_metric([], snapshot.queue_wait.buckets(), snapshot.queue_wait.total)
    yield wait
    yield CounterMetricFamily(
        "mme_worker_restarts",
        "workers that MMS started again after one died, every model",
        value=snapshot.retired_restarts + sum(use.restarts for use in usages.values()),
    )
    yield CounterMetricFamily("mme_unloads", "UNLOADs, every model", value=snapshot.unloads)
    yield CounterMetricFamily(
        "mme_load_failures", "LOADs that failed, every model", value=snapshot.load_failures
    )
