"""When a body being read must end: its deadline, or the floor's, from the arrivals alone."""

from __future__ import annotations

import pytest

from app.memory.bodyrate import BodyFloor, BodyWatch

FLOOR = BodyFloor(min_bytes_per_second=100, grace_seconds=2)  # 200 bytes in every 2 s


def test_without_a_floor_the_body_ends_at_its_deadline() -> None:
    watch = BodyWatch(BodyFloor(), timeout_seconds=30, start=10)
    watch.arrived(11, 1)
    assert watch.deadline() == 40
    assert not watch.below_floor(40)


def test_nothing_arrived_ends_one_grace_period_after_the_start() -> None:
    watch = BodyWatch(FLOOR, timeout_seconds=30, start=0)
    assert watch.deadline() == 2
    assert watch.below_floor(2)


def test_the_deadline_is_one_grace_period_after_the_window_that_last_held_enough() -> None:
    watch = BodyWatch(FLOOR, timeout_seconds=30, start=0)
    watch.arrived(1.0, 300)
    assert watch.deadline() == 3.0  # the 300 bytes at 1 s carry the window until 3 s
    watch.arrived(2.5, 350)
    assert watch.deadline() == 3.0  # 50 more bytes do not move it: 350 - 200 < 300
    watch.arrived(2.9, 600)
    assert watch.deadline() == pytest.approx(4.9)


def test_a_body_above_the_floor_goes_on_and_one_below_it_ends() -> None:
    above, below = BodyWatch(FLOOR, 1000, 0), BodyWatch(FLOOR, 1000, 0)
    for second in range(1, 60):
        assert above.deadline() > second
        above.arrived(second, 250 * second)
        if below.deadline() >= second:
            below.arrived(second, 50 * second)
    assert above.deadline() == 61  # the last second's bytes alone fill the next window
    assert below.below_floor(below.deadline()) and below.deadline() < 60


def test_the_body_deadline_wins_when_it_comes_first() -> None:
    watch = BodyWatch(FLOOR, timeout_seconds=3, start=0)
    watch.arrived(2.5, 10_000)
    assert watch.deadline() == 3
    assert not watch.below_floor(3)


def test_a_pause_for_room_in_the_budget_is_not_the_clients_time() -> None:
    watch = BodyWatch(FLOOR, timeout_seconds=30, start=0)
    watch.arrived(1.0, 300)
    watch.paused(4.0)
    assert watch.deadline() == 7.0
    assert watch.start + watch.timeout_seconds == 34


def test_the_samples_kept_stay_few_however_long_the_body() -> None:
    watch = BodyWatch(FLOOR, 10_000, 0)
    for tick in range(1, 5000):
        watch.arrived(tick / 10, 100 * tick)
    assert len(watch._samples) <= 3
