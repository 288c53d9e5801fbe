"""The reservation pool: immediate grants, a bounded FIFO wait, refusals with reasons, and every
reservation given back whatever happens to the request holding it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.memory.admission import BUDGET, PRESSURE, QUEUE_TIMEOUT, Admission, Refused


class AlwaysShedding:
    active = True
    usage_bytes = 1
    source = "RSS"
    high_water_bytes = 0

    def shedding(self) -> bool:
        return True


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_grants_while_it_fits_and_gets_every_byte_back() -> None:
    async def scenario() -> None:
        pool = Admission(100)
        first = await pool.reserve(60)
        second = await pool.reserve(40)
        assert pool.reserved_bytes == 100
        first.release()
        first.release()  # idempotent: every exit path may call it
        second.release()
        assert pool.reserved_bytes == 0
        assert pool.admitted == 2

    run(scenario())


def test_a_waiter_is_granted_when_room_comes_back_in_fifo_order() -> None:
    async def scenario() -> list[str]:
        pool = Admission(100, queue_limit=4, max_wait_seconds=5)
        held = await pool.reserve(100)
        order: list[str] = []

        async def wait(name: str, nbytes: int) -> None:
            reservation = await pool.reserve(nbytes)
            order.append(name)
            await asyncio.sleep(0)
            reservation.release()

        tasks = [asyncio.create_task(wait("large", 90)), asyncio.create_task(wait("small", 5))]
        await asyncio.sleep(0.01)
        assert pool.queued == 2
        held.release()
        await asyncio.gather(*tasks)
        assert pool.reserved_bytes == 0
        return order

    assert run(scenario()) == ["large", "small"]  # the small one does not overtake


def test_a_full_queue_and_a_long_wait_are_refused_and_return_their_place() -> None:
    async def scenario() -> tuple[str, str]:
        pool = Admission(100, queue_limit=1, max_wait_seconds=0.05)
        held = await pool.reserve(100)
        waiting = asyncio.create_task(pool.reserve(10))
        await asyncio.sleep(0)
        with pytest.raises(Refused) as full:
            await pool.reserve(10)
        with pytest.raises(Refused) as timed_out:
            await waiting
        assert pool.queued == 0 and pool.reserved_bytes == 100
        held.release()
        assert pool.reserved_bytes == 0
        return full.value.reason, timed_out.value.reason

    assert run(scenario()) == (BUDGET, QUEUE_TIMEOUT)


def test_a_request_larger_than_the_budget_is_refused_at_once() -> None:
    async def scenario() -> str:
        pool = Admission(100)
        with pytest.raises(Refused) as info:
            await pool.reserve(101)
        return info.value.reason

    assert run(scenario()) == BUDGET


def test_pressure_refuses_before_any_reservation() -> None:
    async def scenario() -> None:
        pool = Admission(100, pressure=AlwaysShedding())  # type: ignore[arg-type]
        with pytest.raises(Refused) as info:
            await pool.reserve(1)
        assert info.value.reason == PRESSURE
        assert pool.reserved_bytes == 0 and pool.rejections[PRESSURE] == 1

    run(scenario())


def test_a_waiter_cancelled_before_or_after_its_grant_leaves_nothing_reserved() -> None:
    async def scenario() -> None:
        pool = Admission(100, queue_limit=4, max_wait_seconds=5)
        held = await pool.reserve(100)
        gone = asyncio.create_task(pool.reserve(50))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away while it waited
        await asyncio.gather(gone, return_exceptions=True)
        assert pool.queued == 0
        granted_then_cancelled = asyncio.create_task(pool.reserve(50))
        await asyncio.sleep(0)
        held.release()  # grants it; it is cancelled before it runs again
        granted_then_cancelled.cancel()
        await asyncio.gather(granted_then_cancelled, return_exceptions=True)
        assert pool.reserved_bytes == 0

    run(scenario())


def test_shrinking_a_reservation_admits_the_next(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        pool = Admission(100, queue_limit=1, max_wait_seconds=5)
        chunked = await pool.reserve(100)  # reserved for the largest body it may grow to
        waiter = asyncio.create_task(pool.reserve(60))
        await asyncio.sleep(0)
        chunked.resize(30)  # its body ended small
        other = await waiter
        assert pool.reserved_bytes == 90
        chunked.release()
        other.release()
        assert pool.reserved_bytes == 0

    run(scenario())


def test_refusals_log_one_line_when_they_start_and_one_when_they_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.memory.admission")

    async def scenario() -> None:
        pool = Admission(10, queue_limit=0)
        held = await pool.reserve(10)
        for _ in range(5):
            with pytest.raises(Refused):
                await pool.reserve(5)
        held.release()
        (await pool.reserve(5)).release()

    run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("[memory-admission] Refusing new work (budget, in-flight)")
    assert lines[1] == "[memory-admission] Admitting again (in-flight) after 5 refusal(s)"


def test_an_admitted_request_grows_in_its_turn_and_is_never_shed_for_pressure() -> None:
    async def scenario() -> None:
        shedding = AlwaysShedding()
        pool = Admission(100, queue_limit=1)
        first = await pool.reserve(10)
        pool.pressure = shedding  # type: ignore[assignment]
        assert await first.grow(60) == 0.0  # room: at once, though new work is being shed
        assert pool.reserved_bytes == 60 and pool.admitted == 1  # growing is not admitting
        pool.pressure = None
        other = await pool.reserve(40)  # the pool is full
        growing = asyncio.create_task(first.grow(70))  # 10 more: waits for the room
        await asyncio.sleep(0)
        assert pool.queued == 1 and first.nbytes == 60
        other.release()
        await growing
        assert first.nbytes == 70 and pool.reserved_bytes == 70
        with pytest.raises(Refused) as info:
            await first.grow(101)
        assert info.value.reason == BUDGET and first.nbytes == 70
        first.release()
        assert pool.reserved_bytes == 0

    run(scenario())
