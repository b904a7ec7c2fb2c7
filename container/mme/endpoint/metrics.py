"""CloudWatch's multi-model endpoint metrics, kept in memory and served as Prometheus text.

Names and units follow CloudWatch's multi-model endpoint metrics: times are in
microseconds; ModelCacheHit and the Invocation*Errors are 1 or 0 per call, so their
average is a ratio. Each call also gets one log line with the phases it went through.

CloudWatch has these per endpoint only; here every series of a call or a model's job also
carries the labels that the container's own metrics (:mod:`mme.gateway.metrics`) use,
``target_model`` (the TargetModel) and ``model_name`` (the opaque id the container knows the
model by), so their sum over the labels is CloudWatch's number and each model's share is
there too. Calls that reached no model (an unknown TargetModel, a bad request) count with
both labels empty. Unlike the container, the endpoint keeps a model's series while it runs:
it plays CloudWatch's part, and a local endpoint sees a bounded set of models.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric

from mme.prometheus_text import render

logger = logging.getLogger("mme.endpoint.calls")

# name → (unit, help); every sample of these is kept as a sum and a count
SUMMARIES = {
    "ModelCacheHit": ("None", "1 when the call found its model loaded, else 0"),
    "ModelLoadingWaitTime": ("Microseconds", "time a call waited for its model's download/load"),
    "ModelDownloadingTime": ("Microseconds", "time to fetch one archive (and extract it)"),
    "ModelLoadingTime": ("Microseconds", "time of one LOAD call to the container"),
    "ModelUnloadingTime": ("Microseconds", "time of one UNLOAD call to the container"),
    "Invocation4XXErrors": ("None", "1 when the model answered 4xx (invocation or LOAD), else 0"),
    "Invocation5XXErrors": ("None", "1 when the model answered 5xx (invocation or LOAD), else 0"),
    "ModelLatency": ("Microseconds", "the container's time to answer an invocation"),
    "OverheadLatency": ("Microseconds", "the endpoint's time besides ModelLatency"),
}
COUNTERS = {"Invocations": ("None", "InvokeEndpoint calls for this endpoint")}
GAUGES = {"LoadedModelCount": ("None", "models loaded in the container now")}
RESPONSES = "mme_endpoint_responses"  # the text format adds _total to a counter's name
ENDPOINT_LABELS = ["EndpointName", "VariantName"]
MODEL_LABELS = ["target_model", "model_name"]


def elapsed_us(started_ns: int) -> int:
    """Microseconds since ``started_ns``, a reading of ``time.monotonic_ns()``."""
    return (time.monotonic_ns() - started_ns) // 1000


class ModelLabels(NamedTuple):
    """The labels of one model's series."""

    target_model: str
    model_name: str


NO_MODEL = ModelLabels("", "")


@dataclass
class CallRecord:
    """What one InvokeEndpoint call did; fields stay None for phases it did not reach."""

    request_id: str
    status: int = 0
    target_model: str | None = None
    model_name: str | None = None  # the container's id of the model, once the call reached it
    cache_hit: bool | None = None
    wait_us: int | None = None
    download_us: int | None = None
    load_us: int | None = None
    unload_us: int | None = None
    model_status: int | None = None
    model_latency_us: int | None = None
    total_us: int = 0

    def log_line(self) -> str:
        """``key=value`` pairs of every phase the call reached."""
        parts = [
            f"request_id={self.request_id}",
            f"status={self.status}",
            f"target_model={self.target_model!r}",
        ]
        optional = {
            "cache_hit": None if self.cache_hit is None else int(self.cache_hit),
            "wait_us": self.wait_us,
            "download_us": self.download_us,
            "load_us": self.load_us,
            "unload_us": self.unload_us,
            "model_status": self.model_status,
            "model_latency_us": self.model_latency_us,
        }
        parts += [f"{key}={value}" for key, value in optional.items() if value is not None]
        parts.append(f"total_us={self.total_us}")
        return "invocation " + " ".join(parts)

    def model(self) -> ModelLabels:
        """The labels of the model the call reached, or NO_MODEL."""
        if self.model_name is None or self.target_model is None:
            return NO_MODEL
        return ModelLabels(self.target_model, self.model_name)


@dataclass
class _Summary:
    total: float = 0.0
    count: int = 0


@dataclass
class Metrics:
    """Thread-safe store of the endpoint's metrics."""

    endpoint_name: str
    variant_name: str
    _summaries: dict[tuple[str, ModelLabels], _Summary] = field(default_factory=dict)
    _counters: dict[tuple[str, ModelLabels], int] = field(default_factory=dict)
    _gauges: dict[str, float] = field(default_factory=dict)
    _responses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, name: str, value: float, model: ModelLabels = NO_MODEL) -> None:
        """Add one sample of ``model`` to a summary metric (a time in microseconds, or a 0/1)."""
        assert name in SUMMARIES, name
        with self._lock:
            summary = self._summaries.setdefault((name, model), _Summary())
            summary.total += value
            summary.count += 1

    def set_gauge(self, name: str, value: float) -> None:
        """Set a gauge (LoadedModelCount)."""
        assert name in GAUGES, name
        with self._lock:
            self._gauges[name] = value

    def count_response(self, status: int) -> None:
        """Count one answer of the endpoint by its HTTP status."""
        with self._lock:
            self._responses[status] = self._responses.get(status, 0) + 1

    def record_call(self, record: CallRecord, counted: bool = True) -> None:
        """Account for one InvokeEndpoint call and write its log line.

        ``counted`` is False for a call to another endpoint's name: it gets its log line
        and its response status, but no CloudWatch metric of this endpoint.
        """
        logger.info("%s", record.log_line())
        self.count_response(record.status)
        if not counted:
            return
        model = record.model()
        with self._lock:
            key = ("Invocations", model)
            self._counters[key] = self._counters.get(key, 0) + 1
        if record.cache_hit is not None:
            self.observe("ModelCacheHit", int(record.cache_hit), model)
        if record.wait_us is not None and not record.cache_hit:
            self.observe("ModelLoadingWaitTime", record.wait_us, model)
        if record.model_status is not None:
            self.observe("Invocation4XXErrors", int(400 <= record.model_status < 500), model)
            self.observe("Invocation5XXErrors", int(record.model_status >= 500), model)
        if record.model_latency_us is not None:
            self.observe("ModelLatency", record.model_latency_us, model)
            self.observe(
                "OverheadLatency", max(0, record.total_us - record.model_latency_us), model
            )

    def prometheus(self) -> str:
        """The metrics in Prometheus text format 0.0.4."""
        return render(self._families()).decode("utf-8")

    def _families(self) -> Iterator[Metric]:
        endpoint = [self.endpoint_name, self.variant_name]
        labels = [*ENDPOINT_LABELS, *MODEL_LABELS]
        with self._lock:
            summaries = sorted((key, s.count, s.total) for key, s in self._summaries.items())
            counters = sorted(self._counters.items())
            gauges = dict(self._gauges)
            responses = sorted(self._responses.items())
        for name, (unit, text) in SUMMARIES.items():
            summary = SummaryMetricFamily(name, f"{text} (unit: {unit})", labels=labels)
            for (_, model), count, total in (row for row in summaries if row[0][0] == name):
                summary.add_metric([*endpoint, *model], count, total)
            yield summary
        for name, (unit, text) in COUNTERS.items():
            counter = CounterMetricFamily(name, f"{text} (unit: {unit})", labels=labels)
            for (_, model), value in (row for row in counters if row[0][0] == name):
                counter.add_metric([*endpoint, *model], value)
            yield counter
        for name, (unit, text) in GAUGES.items():
            gauge = GaugeMetricFamily(name, f"{text} (unit: {unit})", labels=ENDPOINT_LABELS)
            gauge.add_metric(endpoint, gauges.get(name, 0))
            yield gauge
        answers = CounterMetricFamily(
            RESPONSES,
            "answers of the endpoint by HTTP status (/ping and /metrics not counted)",
            labels=[*ENDPOINT_LABELS, "code"],
        )
        for code, count in responses:
            answers.add_metric([*endpoint, str(code)], count)
        yield answers
