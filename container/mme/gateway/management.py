"""LOAD and UNLOAD with the promises that SageMaker relies on and MMS 1.1.11 does not keep.

* A LOAD that fails leaves nothing registered by the time it is answered. MMS answers a
  failed LOAD first and unregisters the model after; after a 507 its own unregister is
  interrupted and it puts the model back without workers, so SageMaker's retried LOAD (it
  frees memory and LOADs again at once) got 409 and the model never served. The gateway
  answers only once the model is gone, and its answer carries the reason that the worker
  recorded instead of MMS's bare "Failed to start workers".
* A LOAD that meets a registration without a live worker (left by a failure that nobody
  saw through) unregisters it and LOADs again, instead of answering 409.
* UNLOAD answers once the model's processes have exited, so that their memory is free
  when SageMaker LOADs the next model; MMS answers when it has killed the process it
  started, while the worker and its parent may run on for a moment.
* LOADs and UNLOADs of one model run one at a time; other models are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import psutil

from mme import worker_records
from mme.capacity import Capacity
from mme.gateway.http import Request, Response, error_response
from mme.gateway.scheduler import Scheduler
from mme.gateway.upstream import Upstream

logger = logging.getLogger(__name__)

POLL_S = 0.02
CLEAN_UP_LIMIT_S = 15.0  # how long a failed LOAD may take to leave MMS's table
GONE_SETTLE_S = 0.3  # a 404 must hold this long: MMS can take the model out and put it back
EXIT_LIMIT_S = 5.0  # how long the processes of an unloaded model get to exit by themselves
KILLED_EXIT_LIMIT_S = 5.0
# MMS registered the model before it answered with these, and unregisters it after.
REGISTERED_THEN_FAILED = range(500, 600)


class LoadRequestError(ValueError):
    """A LOAD body that does not describe a model (400)."""


@dataclass(frozen=True)
class LoadRequest:
    """What SageMaker's LOAD carries."""

    model_name: str
    url: str

    def body(self) -> bytes:
        """The body MMS gets: these two fields and nothing else."""
        return json.dumps({"model_name": self.model_name, "url": self.url}).encode("utf-8")


def parse_load(request: Request) -> LoadRequest:
    """The LOAD in ``request`` (a JSON body, or MMS's query parameters); LoadRequestError if bad."""
    query = request.query
    if "model_name" in query or "url" in query:
        fields: Any = {key: values[0] for key, values in query.items()}
    else:
        try:
            fields = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            fields = None
        if not isinstance(fields, dict):
            raise LoadRequestError(
                "the LOAD body must be a JSON object: "
                '{"model_name": "<name>", "url": "<model folder>"}'
            )
    name, url = fields.get("model_name"), fields.get("url")
    _check_name(name)
    if not isinstance(url, str) or not os.path.isabs(url):
        raise LoadRequestError(f"url must be the absolute path of the model's folder, not {url!r}")
    return LoadRequest(name, url)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise LoadRequestError(f"model_name must be a non-empty string, not {name!r}")
    # A name with "/" (or "." or "..") could never be reached again under /models/<name>;
    # control characters and lone surrogates break MMS's own bookkeeping.
    if "/" in name or name in (".", ".."):
        raise LoadRequestError(
            f"model_name {name!r} cannot be used in /models/<name>: "
            "it must not contain '/' or be '.' or '..'"
        )
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise LoadRequestError("model_name must not contain control characters or lone surrogates")


class Management:
    """LOAD and UNLOAD through the gateway."""

    def __init__(
        self, upstream: Upstream, scheduler: Scheduler, server_temp_dir: str, capacity: Capacity
    ) -> None:
        self._upstream = upstream
        self._scheduler = scheduler
        self._temp_dir = server_temp_dir
        self._capacity = capacity
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def load(self, request: Request) -> Response:
        """Register a model; a failure leaves nothing behind and says why."""
        try:
            load = parse_load(request)
        except LoadRequestError as exc:
            return error_response(HTTPStatus.BAD_REQUEST, str(exc), "BadRequestException")
        async with (
            self._capacity.place(load.model_name) as place,
            self._one_at_a_time(load.model_name),
        ):
            if place.refusal is not None:  # the next model would pass a limit (mme.capacity)
                return error_response(HTTPStatus.INSUFFICIENT_STORAGE, place.refusal)
            answer = await self._send_load(load)
            if answer.status == HTTPStatus.CONFLICT and await self._left_without_workers(
                load.model_name
            ):
                logger.warning(
                    "model %s was registered without a live worker (left by an "
                    "earlier failure): unregistering it and loading it again",
                    load.model_name,
                )
                await self._unregister(load.model_name)
                answer = await self._send_load(load)
            if answer.status in REGISTERED_THEN_FAILED:
                answer = await self._clean_up_failed_load(load.model_name, answer)
            elif answer.status == HTTPStatus.OK:
                self._scheduler.set_batching(
                    load.model_name, *worker_records.batching(self._temp_dir, load.model_name)
                )
            place.loaded = answer.status == HTTPStatus.OK
            return answer

    async def unload(self, request: Request, model_name: str) -> Response:
        """Unregister a model; answer once its processes have exited."""
        async with self._one_at_a_time(model_name):
            processes = worker_records.model_processes(self._temp_dir, model_name)
            answer = await self._upstream.send(request)
            if answer.status == HTTPStatus.OK:
                await _end(model_name, processes, EXIT_LIMIT_S)
                worker_records.forget(self._temp_dir, model_name)
                self._scheduler.forget(model_name)
                self._capacity.release(model_name)
            return answer

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, model_name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(model_name, (asyncio.Lock(), 0))
        self._locks[model_name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[model_name]
            if users == 1:
                del self._locks[model_name]
            else:
                self._locks[model_name] = (lock, users - 1)

    async def _send_load(self, load: LoadRequest) -> Response:
        return await self._upstream.send(
            Request("POST", "/models", [(b"Content-Type", b"application/json")], load.body())
        )

    async def _describe(self, model_name: str) -> list[dict[str, Any]] | None:
        """MMS's workers of a registered model, or None when it is not registered."""
        answer = await self._upstream.send(Request("GET", _model_path(model_name)))
        if answer.status == HTTPStatus.NOT_FOUND:
            return None
        described = json.loads(answer.body)
        described = described[0] if isinstance(described, list) else described
        return list(described.get("workers") or [])

    async def _left_without_workers(self, model_name: str) -> bool:
        workers = await self._describe(model_name)
        return workers is not None and not any(w.get("status") == "READY" for w in workers)

    async def _unregister(self, model_name: str) -> None:
        """Unregister until MMS no longer lists the model (for a short while on end)."""
        deadline = time.monotonic() + CLEAN_UP_LIMIT_S
        gone_since: float | None = None
        while time.monotonic() < deadline:
            if await self._describe(model_name) is not None:
                gone_since = None
                await self._upstream.send(Request("DELETE", _model_path(model_name)))
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since >= GONE_SETTLE_S:
                return
            await asyncio.sleep(POLL_S)
        logger.error(
            "model %s is still registered %.0f s after its LOAD failed",
            model_name,
            CLEAN_UP_LIMIT_S,
        )

    async def _clean_up_failed_load(self, model_name: str, answer: Response) -> Response:
        processes = worker_records.model_processes(self._temp_dir, model_name)
        await self._unregister(model_name)
        # Nothing of a failed LOAD is of use, and MMS's own worker can hang in it: after a
        # 507 it blocks opening a log FIFO that MMS has closed already.
        await _end(model_name, processes, 0)
        reason = worker_records.load_failure(self._temp_dir, model_name)
        worker_records.forget(self._temp_dir, model_name)
        if not reason:
            return answer
        logger.info("LOAD of %s failed with %d: %s", model_name, answer.status, reason)
        return error_response(answer.status, f"{_mms_message(answer)}: {reason}", _mms_type(answer))


async def _end(model_name: str, processes: list[psutil.Process], exit_limit_s: float) -> None:
    """Give ``processes`` ``exit_limit_s`` to exit, then kill those that did not."""
    left = await _exited(processes, exit_limit_s)
    if not left:
        return
    if exit_limit_s:
        logger.warning(
            "model %s: %d process(es) still ran %.0f s after MMS let them go; killing them",
            model_name,
            len(left),
            exit_limit_s,
        )
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks that the pid was not reused
    if await _exited(left, KILLED_EXIT_LIMIT_S):
        logger.error(
            "model %s: processes %s did not exit even when killed",
            model_name,
            [p.pid for p in left],
        )


def _model_path(model_name: str) -> str:
    return f"/models/{quote(model_name, safe='')}"


def _mms_message(answer: Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(answer.body)["message"])
    return HTTPStatus(answer.status).phrase


def _mms_type(answer: Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, KeyError):
        return str(json.loads(answer.body)["type"])
    return ""


async def _exited(processes: list[psutil.Process], limit_s: float) -> list[psutil.Process]:
    """Wait up to ``limit_s`` for ``processes`` to end; those that still run."""
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    fds: list[int] = []
    for process in processes:
        try:
            fd = os.pidfd_open(process.pid)
        except OSError:
            continue  # already gone
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, ended)
        fds.append(fd)
        waits.append(ended)
    try:
        if waits:
            await asyncio.wait(waits, timeout=limit_s)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
    return [p for p in processes if _running(p)]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
