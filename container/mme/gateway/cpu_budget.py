"""The CPU budget: every worker of the server shares the machine's cores, request by request.

Each worker runs torch with an OpenMP pool. If every busy worker took all the cores, N
busy workers would put N x cores spinning threads on the cores, and four busy models
ran at a seventh of the stock stack's speed. No fixed thread count fits both one busy
model (it should have every core) and many (one core each), so the gateway hands out
the cores as the requests come:

* A request may reach a worker only with a grant of threads, taken from ``cores``
  tokens and given back when its answer comes (or its worker dies: MMS answers then too).
* The grant is an even share: ``cores // demand``, at least 1, where the demand counts
  each model's requests in flight or waiting, up to its workers. One busy model gets
  every core; four busy models get one each, and two of them run while two wait.
* A model counts as busy for a moment after its last answer, so that a client that
  sends its next request as soon as it has the last one does not look idle in between
  (which would hand the other models every core, one request at a time).
* Models with waiting requests take turns, so a busy model cannot starve a quiet one.
* A model whose code sets its own thread count says so in its answers (``X-Mme-Threads``)
  and is granted that many from then on, so the budget holds for it too.

The worker applies its grant (:mod:`mme.thread_share`) before it runs the request: the
decoding and preprocessing it does on torch threads count too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mme.gateway.http import Request, Response
from mme.thread_share import OWN_THREADS_HEADER, THREADS_HEADER

LINGER_S = 0.1  # how long a model still counts as busy after its last answer


class QueueFull(Exception):
    """A model has as many requests waiting as it may (MME_JOB_QUEUE_SIZE)."""


@dataclass
class _Model:
    """One model's requests: in flight, waiting, and how busy it was lately."""

    running: int = 0
    waiting: deque[asyncio.Future[int]] = field(default_factory=deque)
    own_threads: int = 0  # the count the model's code sets for itself, once it said so
    peak: int = 0  # the most it was busy lately...
    peak_until: float = 0.0  # ...until then


class CpuBudget:
    """Grants threads to requests so that the workers never run more than ``cores`` at once."""

    def __init__(self, cores: int, workers_per_model: int, queue_size: int) -> None:
        self.cores = cores
        self.free = cores
        self._workers = workers_per_model
        self._queue_size = queue_size
        self._models: dict[str, _Model] = {}
        self._turns: deque[str] = deque()  # models with waiting requests, next first

    @property
    def threads_in_use(self) -> int:
        """Threads granted to requests in flight."""
        return self.cores - self.free

    async def run(self, model_name: str, request: Request,
                  send: Callable[[Request], Awaitable[Response]]) -> Response:
        """Send ``request`` with a grant of threads once one is free; give it back after."""
        threads = await self._acquire(model_name)
        own = 0
        try:
            answer = await send(request.with_headers([(THREADS_HEADER, b"%d" % threads)]))
            own = _own_threads(answer)
            answer.headers = [(k, v) for k, v in answer.headers
                              if k.lower() != OWN_THREADS_HEADER.lower()]
            return answer
        finally:
            self._release(model_name, threads, own)

    def forget(self, model_name: str) -> None:
        """Drop what was learnt of a model (it was unloaded: the next one may differ)."""
        model = self._models.get(model_name)
        if model is not None:
            model.own_threads = 0

    async def _acquire(self, model_name: str) -> int:
        model = self._models.setdefault(model_name, _Model())
        if len(model.waiting) >= self._queue_size:
            raise QueueFull(model_name)
        granted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        model.waiting.append(granted)
        self._note_busy(model)
        if len(model.waiting) == 1:
            self._turns.append(model_name)
        self._dispatch()
        try:
            return await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(model_name, granted.result(), 0)
            raise

    def _release(self, model_name: str, threads: int, own_threads: int) -> None:
        model = self._models[model_name]
        model.running -= 1
        self.free += threads
        if own_threads:
            model.own_threads = own_threads
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant threads to waiting requests, model by model in turn, while there are any."""
        for _ in range(len(self._turns)):
            name = self._turns[0]
            model = self._models[name]
            _drop_cancelled(model.waiting)
            if not model.waiting:
                self._turns.popleft()
                continue
            if model.running >= self._workers:
                self._turns.rotate(-1)  # every worker of it is busy: the next model's turn
                continue
            threads = self._share(model)
            if threads > self.free:
                return  # the next answer frees some; the turn stays with this model
            self.free -= threads
            model.running += 1
            model.waiting.popleft().set_result(threads)
            self._turns.popleft()
            if model.waiting:
                self._turns.append(name)

    def _share(self, model: _Model) -> int:
        if model.own_threads:
            return min(model.own_threads, self.cores)
        return max(1, self.cores // max(1, self._demand()))

    def _demand(self) -> int:
        """How many requests could run now, counting lately busy models; forgets idle ones."""
        demand = 0
        for name, model in list(self._models.items()):
            busy = self._busy(model)
            if busy or model.running or model.own_threads:
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


def _drop_cancelled(waiting: deque[asyncio.Future[int]]) -> None:
    while waiting and waiting[0].cancelled():
        waiting.popleft()


def _own_threads(answer: Response) -> int:
    value = answer.header(OWN_THREADS_HEADER.lower())
    try:
        return int(value) if value else 0
    except ValueError:
        return 0
