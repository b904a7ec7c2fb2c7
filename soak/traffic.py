"""The soak's traffic: a seeded random mix of operations from a pool of client threads.

Operations:

* ``invoke``: InvokeEndpoint on any model, through the real boto3 client;
* ``load``: InvokeEndpoint on a model the container does not hold now, so the endpoint
  LOADs it (and, past ``--max-loaded-models``, UNLOADs the least recently used one);
* ``unload``: ``DELETE /models/<name>`` straight at the container, as SageMaker does; the
  endpoint finds out from the next call's 404 and loads the model again;
* ``bad-target``, ``bad-endpoint``, ``bad-json``: requests whose error is known.

``load`` and ``unload`` first ask the container what it holds (``GET /models``, counted as
``list-models``). Each outcome is counted as it happened (boto3 does not retry) and judged
expected, a known upstream issue, or unexpected; every 200 answer is checked against what
its model must say.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from soak.models import JSON_TYPE, MALFORMED_PAYLOAD, PAYLOAD, ModelSpec
from soak.servers import ENDPOINT_NAME, Servers
from soak.workers import WorkerWatch

OPERATIONS = ("invoke", "load", "unload", "bad")
WARM_UP = "warm-up"  # one invoke of each model before the traffic
BAD_KINDS = ("bad-target", "bad-endpoint", "bad-json")
CHECKED = "200 answer checked"
NOTHING_LOADED = "nothing loaded"
LIST_MODELS = "list-models"
LIST_ATTEMPTS = 3
# An UNLOAD answers 404 when the endpoint evicted the model between our look and our DELETE.
EXPECTED = {
    WARM_UP: {CHECKED},
    LIST_MODELS: {"200"},
    "invoke": {CHECKED},
    "load": {CHECKED},
    "unload": {"200", "404", NOTHING_LOADED},
    "bad-target": {"400 ValidationError"},
    "bad-endpoint": {"400 ValidationError"},
    "bad-json": {"424 ModelError (model 400)"},
}
INVOCATIONS = {WARM_UP, "invoke", "load", *BAD_KINDS}  # the operations that InvokeEndpoint
# Upstream bugs the soak runs into: counted and reported; they fail the run with --strict.
KNOWN_ISSUES = {
    (LIST_MODELS, "500"): "MMS 1.1.11: GET /models throws a NullPointerException "
    "(ManagementRequestHandler.handleListModels) when a model is unregistered while it "
    "builds the list",
}
EXPECTED_VERDICT, KNOWN_VERDICT, UNEXPECTED_VERDICT = "expected", "known issue", "unexpected"
MAX_SAMPLES = 50


def judge(operation: str, result: str) -> str:
    """``expected``, ``known issue`` or ``unexpected``."""
    if result in EXPECTED[operation]:
        return EXPECTED_VERDICT
    return KNOWN_VERDICT if (operation, result) in KNOWN_ISSUES else UNEXPECTED_VERDICT


@dataclass(frozen=True)
class Outcome:
    """What one operation got, and whether that was the right answer."""

    operation: str
    result: str
    seconds: float
    detail: str = ""
    checked: bool = False  # a 200 whose body was compared with the model's answer

    @property
    def expected(self) -> bool:
        """Whether this is an answer the operation may get."""
        return judge(self.operation, self.result) == EXPECTED_VERDICT


class Tally:
    """Outcomes counted by (operation, result), with the first unexpected ones in full."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict  # known issues count as unexpected
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seconds: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
        self.unexpected_samples: list[dict[str, Any]] = []
        self.answers = 0  # 200s from InvokeEndpoint
        self.checked = 0  # of those, the ones compared with the model's answer
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def add(self, outcome: Outcome) -> None:
        """Count ``outcome``."""
        key = (outcome.operation, outcome.result)
        with self._lock:
            self.counts[key] += 1
            self.seconds[key].append(outcome.seconds)
            if outcome.operation in INVOCATIONS and outcome.result.startswith("200"):
                self.answers += 1
                self.checked += outcome.checked
            if not outcome.expected and len(self.unexpected_samples) < MAX_SAMPLES:
                self.unexpected_samples.append(
                    {
                        "at_s": round(time.monotonic() - self._started, 1),
                        "operation": outcome.operation,
                        "result": outcome.result,
                        "seconds": round(outcome.seconds, 3),
                        "detail": outcome.detail,
                    }
                )

    @property
    def total(self) -> int:
        """Operations counted."""
        return sum(self.counts.values())

    @property
    def unexpected(self) -> int:
        """Outcomes that fail the run: unexpected ones, and known issues if strict."""
        failing = {UNEXPECTED_VERDICT, KNOWN_VERDICT} if self.strict else {UNEXPECTED_VERDICT}
        return self._count(failing)

    @property
    def known_issues(self) -> int:
        """Outcomes that are known upstream issues."""
        return self._count({KNOWN_VERDICT})

    def _count(self, verdicts: set[str]) -> int:
        with self._lock:
            return sum(
                count
                for (operation, result), count in self.counts.items()
                if judge(operation, result) in verdicts
            )

    def rows(self) -> list[dict[str, Any]]:
        """One row per (operation, result): count, verdict, mean and max seconds."""
        with self._lock:
            return [
                {
                    "operation": operation,
                    "result": result,
                    "count": count,
                    "verdict": judge(operation, result),
                    "mean_s": round(sum(self.seconds[key]) / count, 3),
                    "max_s": round(max(self.seconds[key]), 3),
                }
                for key, count in sorted(self.counts.items())
                for operation, result in [key]
            ]

    def progress_line(self, elapsed_s: float) -> str:
        """A one-line summary so far."""
        with self._lock:
            per_operation: Counter[str] = Counter()
            for (operation, _), count in self.counts.items():
                per_operation[operation] += count
        parts = ", ".join(f"{name} {count}" for name, count in sorted(per_operation.items()))
        known = f", {self.known_issues} known issues" if self.known_issues else ""
        return (
            f"[{elapsed_s:5.0f} s] {self.total} operations ({parts}); "
            f"{self.unexpected} unexpected{known}"
        )


class ModelGate:
    """Per model: calls share it, an UNLOAD at the container takes it alone.

    SageMaker unloads only models that no call is using; an UNLOAD racing a call in the
    container would fail that call for a reason no real endpoint has.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._calls: Counter[str] = Counter()
        self._unloading: set[str] = set()

    @contextmanager
    def call(self, target: str) -> Iterator[None]:
        """Hold ``target`` for a call (others may too)."""
        with self._condition:
            self._condition.wait_for(lambda: target not in self._unloading)
            self._calls[target] += 1
        try:
            yield
        finally:
            with self._condition:
                self._calls[target] -= 1
                self._condition.notify_all()

    @contextmanager
    def unload(self, target: str) -> Iterator[None]:
        """Hold ``target`` alone: wait for its calls to end; new ones wait for the UNLOAD."""
        with self._condition:
            self._condition.wait_for(lambda: target not in self._unloading)
            self._unloading.add(target)
            self._condition.wait_for(lambda: self._calls[target] == 0)
        try:
            yield
        finally:
            with self._condition:
                self._unloading.discard(target)
                self._condition.notify_all()


@dataclass(frozen=True)
class TrafficOptions:
    """How much traffic, how parallel, and in what mix."""

    seconds: float
    concurrency: int
    seed: int
    mix: dict[str, float]  # operation -> weight
    progress_s: float = 10.0


class Traffic:
    """Sends the operations to ``servers`` and counts what came back."""

    def __init__(
        self, servers: Servers, specs: list[ModelSpec], client: Any, watch: WorkerWatch
    ) -> None:
        self.servers = servers
        self.specs = specs
        self.client = client
        self.watch = watch
        self.gate = ModelGate()
        self.model_ids: dict[str, str] = {}  # TargetModel -> the container's name
        self.tally = Tally()  # where run() counts

    def invoke(self, spec: ModelSpec, operation: str = "invoke") -> Outcome:
        """InvokeEndpoint on ``spec``'s model; checks the answer."""
        with self.gate.call(spec.target):
            started = time.monotonic()
            try:
                answer = self.client.invoke_endpoint(
                    EndpointName=ENDPOINT_NAME,
                    TargetModel=spec.target,
                    ContentType=JSON_TYPE,
                    Accept=spec.accept,
                    Body=PAYLOAD,
                )
                body = answer["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                return Outcome(operation, _error_result(exc), time.monotonic() - started, str(exc))
        seconds = time.monotonic() - started
        wrong = spec.check(answer.get("ContentType", ""), body)
        if wrong is not None:
            return Outcome(
                operation, "200 wrong answer", seconds, f"{spec.target}: {wrong}", checked=True
            )
        self._answered(spec.target)
        return Outcome(operation, CHECKED, seconds, checked=True)

    def _answered(self, target: str) -> None:
        model_id = self.model_ids.get(target)
        if model_id is not None:
            self.watch.answered(target, model_id)

    def run(
        self,
        options: TrafficOptions,
        tally: Tally,
        say: Callable[[str], None],
        sample: Callable[[], dict[str, float]],
    ) -> list[dict[str, float]]:
        """Send operations from ``options.concurrency`` threads for ``options.seconds``;
        ``sample()`` is taken with each progress line, and the samples returned."""
        self.tally = tally
        started = time.monotonic()
        deadline = started + options.seconds
        stop = threading.Event()
        samples: list[dict[str, float]] = []
        reporter = threading.Thread(
            target=self._report,
            daemon=True,
            args=(
                tally,
                started,
                options.progress_s,
                stop,
                say,
                lambda: samples.append({"at_s": round(time.monotonic() - started, 1), **sample()}),
            ),
        )
        reporter.start()
        try:
            with ThreadPoolExecutor(options.concurrency, thread_name_prefix="soak") as pool:
                loops = [
                    pool.submit(
                        self._loop,
                        random.Random(f"{options.seed}-{index}"),
                        options.mix,
                        deadline,
                        tally,
                    )
                    for index in range(options.concurrency)
                ]
                for loop in loops:
                    loop.result()  # a bug in the soak itself must not pass silently
        finally:
            stop.set()
            reporter.join()
        say(tally.progress_line(time.monotonic() - started))
        return samples

    @staticmethod
    def _report(
        tally: Tally,
        started: float,
        every_s: float,
        stop: threading.Event,
        say: Callable[[str], None],
        sample: Callable[[], None],
    ) -> None:
        while not stop.wait(every_s):
            say(tally.progress_line(time.monotonic() - started))
            sample()

    def _loop(
        self, rng: random.Random, mix: dict[str, float], deadline: float, tally: Tally
    ) -> None:
        names, weights = list(mix), list(mix.values())
        while time.monotonic() < deadline:
            tally.add(self._operate(rng.choices(names, weights)[0], rng))

    def _operate(self, operation: str, rng: random.Random) -> Outcome:
        started = time.monotonic()
        try:
            if operation == "invoke":
                return self.invoke(rng.choice(self.specs))
            if operation == "load":
                return self._load(rng)
            if operation == "unload":
                return self._unload(rng)
            return self._bad(rng.choice(BAD_KINDS), rng)
        except OSError as exc:  # the container's GET /models or DELETE failed (requests)
            return Outcome(
                operation, f"error {type(exc).__name__}", time.monotonic() - started, str(exc)
            )

    def _loaded_ids(self) -> set[str]:
        """What the container holds (``GET /models``), each answer counted; a failed
        answer is asked again, up to LIST_ATTEMPTS times."""
        for attempt in range(1, LIST_ATTEMPTS + 1):
            started = time.monotonic()
            try:
                loaded = self.servers.loaded_ids()
            except requests.HTTPError as exc:
                status = "error" if exc.response is None else str(exc.response.status_code)
                self.tally.add(Outcome(LIST_MODELS, status, time.monotonic() - started, str(exc)))
                if attempt == LIST_ATTEMPTS:
                    raise
                continue
            self.tally.add(Outcome(LIST_MODELS, "200", time.monotonic() - started))
            return loaded
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _load(self, rng: random.Random) -> Outcome:
        loaded = self._loaded_ids()
        cold = [spec for spec in self.specs if self.model_ids.get(spec.target) not in loaded]
        return self.invoke(rng.choice(cold or self.specs), "load")

    def _unload(self, rng: random.Random) -> Outcome:
        started = time.monotonic()
        targets = {model_id: target for target, model_id in self.model_ids.items()}
        loaded = sorted(self._loaded_ids() & set(targets))
        if not loaded:
            return Outcome("unload", NOTHING_LOADED, time.monotonic() - started)
        model_id = rng.choice(loaded)
        with self.gate.unload(targets[model_id]):
            started = time.monotonic()
            status = self.servers.unload(model_id)
        return Outcome(
            "unload", str(status), time.monotonic() - started, f"{targets[model_id]} ({model_id})"
        )

    def _bad(self, kind: str, rng: random.Random) -> Outcome:
        spec = rng.choice([spec for spec in self.specs if spec.default_handler])
        request = {
            "EndpointName": ENDPOINT_NAME,
            "TargetModel": spec.target,
            "ContentType": JSON_TYPE,
            "Accept": JSON_TYPE,
            "Body": PAYLOAD,
        }
        if kind == "bad-target":
            request["TargetModel"] = f"missing/m{rng.randrange(10**6)}.tar.gz"
        elif kind == "bad-endpoint":
            request["EndpointName"] = f"{ENDPOINT_NAME}-missing"
        else:
            request["Body"] = MALFORMED_PAYLOAD
        # Only bad JSON reaches the model; the other two are refused before any load.
        with self.gate.call(spec.target) if kind == "bad-json" else nullcontext():
            started = time.monotonic()
            try:
                answer = self.client.invoke_endpoint(**request)
                body = answer["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                outcome = Outcome(kind, _error_result(exc), time.monotonic() - started, str(exc))
            else:
                outcome = Outcome(
                    kind, "200 instead of an error", time.monotonic() - started, repr(body[:200])
                )
        if kind == "bad-json" and outcome.expected:  # the model itself refused: it is loaded
            self._answered(spec.target)
        return outcome


def _error_result(exc: ClientError | BotoCoreError) -> str:
    """``424 ModelError (model 400)``, ``400 ValidationError``, or ``error ReadTimeoutError``."""
    if not isinstance(exc, ClientError):
        return f"error {type(exc).__name__}"
    response = exc.response
    result = f"{response['ResponseMetadata']['HTTPStatusCode']} {response['Error']['Code']}"
    original = response.get("OriginalStatusCode")
    return f"{result} (model {original})" if original is not None else result
