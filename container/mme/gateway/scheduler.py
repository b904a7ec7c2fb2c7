"""Which invocation reaches a worker when, with how many threads, and with which others.

The gateway queues each model's invocations itself (MMS's queue stays empty: at most
one request or batch per worker is in flight) and decides three things.

**The CPU budget.** Each worker runs torch with an OpenMP pool. If every busy worker took
all the cores, N busy workers would put N x cores spinning threads on the cores (four
busy models ran at a seventh of the stock stack's speed). No fixed thread count fits one
busy model (it should have every core) and many (one core each), so cores are handed out
as requests come:

* A request (or batch) reaches a worker only with a grant of threads, taken from
  ``cores`` tokens and given back when its answer comes (or its worker dies: MMS answers
  then too). The worker sets torch's thread count to it (:mod:`mme.thread_share`).
* The grant is an even share: ``cores // demand``, at least 1, where the demand counts
  each model's requests in flight or waiting, up to its workers. One busy model gets
  every core; four busy models get one each, and two of them run while two wait.
* A model counts as busy for a moment after its last answer, so that a client that sends
  its next request as soon as it has the last one does not look idle in between (which
  would hand another model every core, one request at a time).
* A model whose code sets its own thread count says so in its answers and is granted
  that many from then on.

**Turns.** Models with waiting requests take turns, so a busy model cannot starve a quiet one.

**Batches.** A model that batches (its worker says how many requests it answers at once)
gets the requests that wait for it together, up to its limit, in one MMS request
(:mod:`mme.batch_wire`). Batches form from what queued while its workers were busy; a
model may also let a batch wait a few milliseconds to fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mme import batch_wire
from mme.gateway.http import HOP_BY_HOP, Request, Response
from mme.worker_headers import OWN_THREADS, THREADS

logger = logging.getLogger(__name__)

LINGER_S = 0.1  # how long a model still counts as busy after its last answer

Send = Callable[[Request], Awaitable[Response]]


class QueueFull(Exception):
    """A model has as many requests waiting as it may (MME_JOB_QUEUE_SIZE)."""


@dataclass
class _Pending:
    request: Request
    answer: asyncio.Future[Response]
    queued_at: float


@dataclass
class _Model:
    """One model's requests, in flight and waiting, and what the gateway knows of it."""

    running: int = 0
    waiting: deque[_Pending] = field(default_factory=deque)
    own_threads: int = 0  # the count the model's code sets for itself, once it said so
    max_batch: int = 1
    max_delay_s: float = 0.0
    peak: int = 0  # the most it was busy lately...
    peak_until: float = 0.0  # ...until then
    timer: asyncio.TimerHandle | None = None  # a batch waiting to fill


class Scheduler:
    """Queues invocations per model and sends them to MMS with grants of threads."""

    def __init__(
        self, send: Send, cores: int, workers_per_model: int, queue_size: int, max_batch_bytes: int
    ) -> None:
        """``cores`` 0: no CPU budget (every worker keeps its own thread count)."""
        self.cores = cores
        self.free = cores
        self._send = send
        self._workers = workers_per_model
        self._queue_size = queue_size
        self._max_batch_bytes = max_batch_bytes
        self._models: dict[str, _Model] = {}
        self._turns: deque[str] = deque()  # models with waiting requests, next first
        self._sending: set[asyncio.Task[None]] = set()
        # metrics hook: told how long each request waited for its worker and grant
        self.on_wait: Callable[[float], None] | None = None

    @property
    def threads_in_use(self) -> int:
        """Threads granted to requests in flight."""
        return self.cores - self.free

    async def run(self, model_name: str, request: Request) -> Response:
        """Queue ``request`` for ``model_name``; its answer once a worker gave it."""
        model = self._models.setdefault(model_name, _Model())
        if len(model.waiting) >= self._queue_size:
            raise QueueFull(model_name)
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), loop.time())
        model.waiting.append(pending)
        self._note_busy(model)
        if len(model.waiting) == 1:
            self._turns.append(model_name)
        self._dispatch()
        return await pending.answer

    def set_batching(self, model_name: str, max_size: int, max_delay_ms: int) -> None:
        """From now on, send up to ``max_size`` requests of the model at once."""
        model = self._models.setdefault(model_name, _Model())
        model.max_batch, model.max_delay_s = max_size, max_delay_ms / 1000

    def forget(self, model_name: str) -> None:
        """Drop what was learnt of a model (it was unloaded: the next one may differ)."""
        model = self._models.get(model_name)
        if model is not None:
            model.own_threads, model.max_batch, model.max_delay_s = 0, 1, 0.0

    def close(self) -> None:
        """Stop sending (the server stops)."""
        for task in self._sending:
            task.cancel()

    # Granting

    def _dispatch(self) -> None:
        """Send what waits, model by model in turn, while threads and workers are free.

        Until every model in turn was passed over once since the last send: one send per
        call would leave a model's other free workers idle until the next event.
        """
        passed = 0
        while self._turns and passed < len(self._turns):
            name = self._turns[0]
            model = self._models[name]
            if not model.waiting:
                self._turns.popleft()
                continue
            if model.running >= self._workers or not self._filled(model):
                self._turns.rotate(-1)  # the next model's turn
                passed += 1
                continue
            passed = 0
            threads = self._share(model)
            if self.cores and threads > self.free:
                return  # the next answer frees some; the turn stays with this model
            self.free -= threads
            model.running += 1
            batch = self._take_batch(model)
            if self.on_wait is not None:  # metrics hook
                now = asyncio.get_running_loop().time()
                for pending in batch:
                    self.on_wait(now - pending.queued_at)
            self._turns.popleft()
            if model.waiting:
                self._turns.append(name)
            task = asyncio.get_running_loop().create_task(self._answer(model, batch, threads))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _filled(self, model: _Model) -> bool:
        """Whether a batch of the model may go: full, or waited long enough."""
        if model.max_delay_s <= 0 or len(model.waiting) >= model.max_batch:
            return True
        loop = asyncio.get_running_loop()
        due = model.waiting[0].queued_at + model.max_delay_s
        if loop.time() >= due:
            return True
        if model.timer is None:
            model.timer = loop.call_at(due, self._timer_fired, model)
        return False

    def _timer_fired(self, model: _Model) -> None:
        model.timer = None
        self._dispatch()

    def _take_batch(self, model: _Model) -> list[_Pending]:
        batch = [model.waiting.popleft()]
        size = len(batch[0].request.body)
        while (
            model.waiting
            and len(batch) < model.max_batch
            and size + len(model.waiting[0].request.body) <= self._max_batch_bytes
        ):
            size += len(model.waiting[0].request.body)
            batch.append(model.waiting.popleft())
        return batch

    def _share(self, model: _Model) -> int:
        if not self.cores:
            return 0
        if model.own_threads:
            return min(model.own_threads, self.cores)
        return max(1, self.cores // max(1, self._demand()))

    def _demand(self) -> int:
        """How many requests could run now, counting lately busy models; forgets idle ones."""
        demand = 0
        for name, model in list(self._models.items()):
            busy = self._busy(model)
            if busy or model.running or model.own_threads or model.max_batch > 1:
                demand += busy
            else:
                del self._models[name]
        return demand

    def _busy(self, model: _Model) -> int:
        now = min(model.running + len(model.waiting), self._workers)
        return max(now, model.peak) if time.monotonic() < model.peak_until else now

    def _note_busy(self, model: _Model) -> None:
        now = min(model.running + len(model.waiting), self._workers)
        if now >= model.peak or time.monotonic() >= model.peak_until:
            model.peak, model.peak_until = now, time.monotonic() + LINGER_S

    # Sending

    async def _answer(self, model: _Model, batch: list[_Pending], threads: int) -> None:
        grant = [(THREADS.encode(), b"%d" % threads)] if threads else []
        own = 0
        try:
            if len(batch) == 1:
                answers = [await self._send(batch[0].request.with_headers(grant))]
            else:
                answers = await self._send_batch(batch, grant)
            own = max(_own_threads(answer) for answer in answers)
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.answer.done():
                    pending.answer.set_result(answer)
        except Exception as exc:  # MMS unreachable: every request of the batch gets it
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
        except asyncio.CancelledError:  # the server stops: nothing more is sent
            self._give_back(model, threads, own)
            raise
        self._give_back(model, threads, own)
        self._dispatch()

    def _give_back(self, model: _Model, threads: int, own: int) -> None:
        model.running -= 1
        self.free += threads
        if own:
            model.own_threads = own

    async def _send_batch(
        self, batch: list[_Pending], grant: list[tuple[bytes, bytes]]
    ) -> list[Response]:
        parts = [batch_wire.Part(p.request.body, _text_headers(p.request)) for p in batch]
        packed = Request(
            "POST",
            batch[0].request.target,
            [
                (b"Content-Type", batch_wire.CONTENT_TYPE.encode()),
                (batch_wire.BATCH_HEADER.encode(), b"%d" % len(batch)),
                *grant,
            ],
            batch_wire.encode(parts, with_status=False),
        )
        answer = await self._send(packed)
        if answer.header(b"content-type") != batch_wire.CONTENT_TYPE.encode():
            return [answer] * len(batch)  # MMS answered for all of them (404, Worker died...)
        own = answer.header(OWN_THREADS.lower().encode())
        extra = [(OWN_THREADS.encode(), own)] if own else []
        return [
            Response(
                part.status,
                [(k.encode("latin-1"), v.encode("latin-1")) for k, v in part.headers] + extra,
                part.body,
            )
            for part in batch_wire.decode(answer.body)
        ]


def _text_headers(request: Request) -> list[tuple[str, str]]:
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in request.headers
        if k.lower() not in HOP_BY_HOP
    ]


def _own_threads(answer: Response) -> int:
    name = OWN_THREADS.lower().encode()
    value = answer.header(name)
    answer.headers = [(k, v) for k, v in answer.headers if k.lower() != name]
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
