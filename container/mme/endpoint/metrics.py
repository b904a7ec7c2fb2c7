"""CloudWatch's multi-model endpoint metrics, kept in memory and served as Prometheus text.

Names and units follow SageMaker's (docs/contract.md section 3): times are in
microseconds; ModelCacheHit and the Invocation*Errors are 1 or 0 per call, so their
average is a ratio. Each call also gets one log line with the phases it went through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

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
RESPONSES = "mme_endpoint_responses_total"


@dataclass
class CallRecord:
    """What one InvokeEndpoint call did; fields stay None for phases it did not reach."""

    request_id: str
    status: int = 0
    target_model: str | None = None
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
        parts = [f"request_id={self.request_id}", f"status={self.status}",
                 f"target_model={self.target_model!r}"]
        optional = {
            "cache_hit": None if self.cache_hit is None else int(self.cache_hit),
            "wait_us": self.wait_us, "download_us": self.download_us, "load_us": self.load_us,
            "unload_us": self.unload_us, "model_status": self.model_status,
            "model_latency_us": self.model_latency_us,
        }
        parts += [f"{key}={value}" for key, value in optional.items() if value is not None]
        parts.append(f"total_us={self.total_us}")
        return "invocation " + " ".join(parts)


@dataclass
class _Summary:
    total: float = 0.0
    count: int = 0


@dataclass
class Metrics:
    """Thread-safe store of the endpoint's metrics."""

    endpoint_name: str
    variant_name: str
    _summaries: dict[str, _Summary] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)
    _gauges: dict[str, float] = field(default_factory=dict)
    _responses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, name: str, value: float) -> None:
        """Add one sample to a summary metric (a time in microseconds, or a 0/1)."""
        assert name in SUMMARIES, name
        with self._lock:
            summary = self._summaries.setdefault(name, _Summary())
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
        with self._lock:
            self._counters["Invocations"] = self._counters.get("Invocations", 0) + 1
        if record.cache_hit is not None:
            self.observe("ModelCacheHit", int(record.cache_hit))
        if record.wait_us is not None and not record.cache_hit:
            self.observe("ModelLoadingWaitTime", record.wait_us)
        if record.model_status is not None:
            self.observe("Invocation4XXErrors", int(400 <= record.model_status < 500))
            self.observe("Invocation5XXErrors", int(record.model_status >= 500))
        if record.model_latency_us is not None:
            self.observe("ModelLatency", record.model_latency_us)
            self.observe("OverheadLatency", max(0, record.total_us - record.model_latency_us))

    def snapshot(self) -> dict[str, float]:
        """Every value by its Prometheus sample name (``X_sum``, ``X_count``, counters, gauges)."""
        with self._lock:
            values: dict[str, float] = {}
            for name in SUMMARIES:
                summary = self._summaries.get(name, _Summary())
                values[f"{name}_sum"] = summary.total
                values[f"{name}_count"] = summary.count
            values.update({name: self._counters.get(name, 0) for name in COUNTERS})
            values.update({name: self._gauges.get(name, 0) for name in GAUGES})
            return values

    def _labels(self, extra: str = "") -> str:
        return (f'{{EndpointName="{self.endpoint_name}",VariantName="{self.variant_name}"'
                f"{extra}}}")

    def _families(self, values: dict[str, float]) -> Iterator[str]:
        for kind, table in (("summary", SUMMARIES), ("counter", COUNTERS), ("gauge", GAUGES)):
            for name, (unit, text) in table.items():
                yield f"# HELP {name} {text} (unit: {unit})"
                yield f"# TYPE {name} {kind}"
                samples = [f"{name}_sum", f"{name}_count"] if kind == "summary" else [name]
                yield from (f"{sample}{self._labels()} {values[sample]:g}" for sample in samples)

    def prometheus(self) -> str:
        """The metrics in Prometheus text format 0.0.4."""
        lines = list(self._families(self.snapshot()))
        lines += [f"# HELP {RESPONSES} answers of the endpoint by HTTP status (/ping and "
                  "/metrics not counted)",
                  f"# TYPE {RESPONSES} counter"]
        with self._lock:
            responses = sorted(self._responses.items())
        for code, count in responses:
            labels = self._labels(f',code="{code}"')
            lines.append(f"{RESPONSES}{labels} {count}")
        return "\n".join(lines) + "\n"
