"""Pressure: sampled, with hysteresis, one log line per change of state."""

from __future__ import annotations

import logging

import pytest

from app.memory.pressure import Pressure
from tests.memory.conftest import FakeClock

MB = 1024 * 1024


def make(usage: list[int | None], clock: FakeClock, started: list[int]) -> Pressure:
    return Pressure(
        450 * MB,
        lambda: usage[0],
        "RSS",
        low_water_bytes=400 * MB,
        on_start=started.append,
        sample_seconds=0.25,
        clock=clock,
    )


def test_sheds_above_the_mark_until_usage_falls_below_the_low_water(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.memory.pressure")
    usage: list[int | None] = [300 * MB]
    clock, started = FakeClock(0.0), []
    pressure = make(usage, clock, started)
    assert not pressure.shedding()
    usage[0] = 460 * MB
    assert not pressure.shedding()  # not sampled again yet: at most every 0.25 s
    clock.now += 0.3
    assert pressure.shedding()
    assert started == [460 * MB]  # the release is asked for once, on the crossing
    for mb in (430, 410):  # under the mark but not under the low water: still shedding
        usage[0], clock.now = mb * MB, clock.now + 0.3
        assert pressure.shedding()
    usage[0], clock.now = 390 * MB, clock.now + 0.3
    assert not pressure.shedding()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "Shedding new work: RSS 460.0MB is over the high-water mark 450.0MB" in lines[0]
    assert "Stopped shedding: RSS 390.0MB is under 400.0MB" in lines[1]
    assert pressure.episodes == 1


def test_an_unreadable_figure_changes_nothing() -> None:
    clock, started = FakeClock(0.0), []
    usage: list[int | None] = [None]
    pressure = make(usage, clock, started)
    assert not pressure.shedding()

    def broken() -> int:
        raise OSError("gone")

    pressure._read = broken
    clock.now += 1
    assert not pressure.shedding()
    assert pressure.read_failures == 1 and not started
