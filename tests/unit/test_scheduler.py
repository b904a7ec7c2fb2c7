"""The gateway's scheduler in-process, against a stand-in MMS whose answers the test releases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mme import batch_wire
from mme.gateway.http import Request, Response
from mme.gateway.scheduler import QueueFull, Scheduler


class StandInMms:
    """Records what reaches it; each request waits until the test answers it."""

    def __init__(self) -> None:
        self.received: list[tuple[Request, asyncio.Future[Response]]] = []

    async def send(self, request: Request) -> Response:
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.received.append((request, answer))
        return await answer

    def threads(self, index: int) -> int:
        return int(self.received[index][0].header(b"x-mme-threads") or 0)

    def answer(self, index: int, response: Response | None = None) -> None:
        request, answer = self.received[index]
        if response is None and request.header(b"content-type") == batch_wire.CONTENT_TYPE.encode():
            parts = batch_wire.decode(request.body)
            body = batch_wire.encode([batch_wire.Part(p.body[::-1]) for p in parts], True)
            response = Response(200, [(b"Content-Type", batch_wire.CONTENT_TYPE.encode())], body)
        answer.set_result(response or Response(200, [], request.body))


def invoke(body: bytes = b"x") -> Request:
    return Request("POST", "/models/m/invoke", [(b"Content-Type", b"text/plain")], body)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(
    test: Callable[[StandInMms, Scheduler], Awaitable[Any]],
    cores: int = 2,
    workers: int = 1,
    queue: int = 100,
) -> Any:
    async def main() -> Any:
        mms = StandInMms()
        return await test(mms, Scheduler(mms.send, cores, workers, queue, 1 << 20))

    return asyncio.run(main())


def test_a_lone_request_gets_every_core() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        task = asyncio.create_task(scheduler.run("a", invoke()))
        await settle()
        assert mms.threads(0) == 2
        mms.answer(0)
        assert (await task).body == b"x"
        assert scheduler.threads_in_use == 0

    run(test)


def test_busy_models_share_the_cores_and_take_turns() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        tasks = [
            asyncio.create_task(scheduler.run(name, invoke(name.encode())))
            for name in ("a", "a", "a", "b", "c", "d")
        ]
        await settle()
        assert mms.threads(0) == 2  # the first came alone: every core, until it answers
        assert len(mms.received) == 1
        for step in range(5):
            mms.answer(step)
            await settle()
            # four models want the cores now: one thread each, two at once
            assert [mms.threads(i) for i in range(step + 1, len(mms.received))] in ([1, 1], [1])
            assert scheduler.threads_in_use <= 2
        served = [request.body for request, _ in mms.received]
        assert served[0] == served[-1] == b"a"  # a's third request only after b, c and d
        assert sorted(served[1:5]) == [b"a", b"b", b"c", b"d"]
        mms.answer(5)
        await asyncio.gather(*tasks)

    run(test)


def test_a_full_queue_is_refused() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        running = [asyncio.create_task(scheduler.run("a", invoke())) for _ in range(3)]
        await settle()
        with pytest.raises(QueueFull):
            await scheduler.run("a", invoke())
        for index in range(3):
            mms.answer(index)
            await settle()
        await asyncio.gather(*running)

    run(test, queue=2)


def test_what_waited_goes_as_one_batch_and_each_gets_its_answer() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        scheduler.set_batching("a", 3, 0)
        first = asyncio.create_task(scheduler.run("a", invoke(b"first")))
        await settle()
        rest = [asyncio.create_task(scheduler.run("a", invoke(b"r%d" % i))) for i in range(4)]
        await settle()
        assert len(mms.received) == 1  # the only worker is busy: they wait
        mms.answer(0)
        await settle()
        batch = mms.received[1][0]
        assert batch.header(b"x-mme-batch") == b"3"
        assert [p.body for p in batch_wire.decode(batch.body)] == [b"r0", b"r1", b"r2"]
        mms.answer(1)  # the stand-in answers each part with its body reversed
        await settle()
        mms.answer(2)  # the fourth, alone: echoed
        assert (await first).body == b"first"
        assert [(await task).body for task in rest] == [b"0r", b"1r", b"2r", b"r3"]

    run(test)


def test_an_unreachable_mms_fails_the_requests_and_gives_the_cores_back() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        task = asyncio.create_task(scheduler.run("a", invoke()))
        await settle()
        mms.received[0][1].set_exception(ConnectionError("gone"))
        with pytest.raises(ConnectionError):
            await task
        assert scheduler.threads_in_use == 0

    run(test)


def test_a_model_that_sets_its_own_threads_is_granted_them() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        task = asyncio.create_task(scheduler.run("a", invoke()))
        await settle()
        mms.answer(0, Response(200, [(b"X-Mme-Own-Threads", b"1")], b"ok"))
        answer = await task
        assert answer.header(b"x-mme-own-threads") is None  # not for the client
        again = asyncio.create_task(scheduler.run("a", invoke()))
        await settle()
        assert mms.threads(1) == 1
        mms.answer(1)
        await again

    run(test, cores=4)


def test_an_answer_lets_every_free_worker_of_a_model_take_a_request() -> None:
    async def test(mms: StandInMms, scheduler: Scheduler) -> None:
        tasks = [asyncio.create_task(scheduler.run("a", invoke())) for _ in range(4)]
        await settle()
        assert len(mms.received) == 1  # the first came alone: every core
        mms.answer(0)
        await settle()
        # three wait for two workers: both take one at once, a core each
        assert [mms.threads(i) for i in range(1, len(mms.received))] == [1, 1]
        for index in (1, 2, 3):
            mms.answer(index)
            await settle()
        await asyncio.gather(*tasks)

    run(test, workers=2)
