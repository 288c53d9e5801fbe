"""The data-rate floor: measured over a sliding window, only while the server waits."""

from __future__ import annotations

from app.edge.rates import DataRate, RateFloor

FLOOR = RateFloor(min_bytes_per_second=240, grace_seconds=5)


def feed(rate: DataRate, samples: list[tuple[float, int]], waiting: bool = True) -> None:
    for now, total in samples:
        rate.observe(waiting, total, now)


def test_a_client_below_the_floor_for_the_grace_period_is_too_slow() -> None:
    rate = DataRate(FLOOR)
    feed(rate, [(t, 10 * t) for t in range(5)])  # 10 B/s for 4 s: still in grace
    assert not rate.too_slow()
    feed(rate, [(5, 50)])
    assert rate.too_slow()


def test_a_client_at_the_floor_is_not() -> None:
    rate = DataRate(FLOOR)
    feed(rate, [(t, 240 * t) for t in range(30)])
    assert not rate.too_slow()


def test_a_first_burst_does_not_hide_a_stall() -> None:
    """128 KB into the kernel's buffers at once, then a few bytes a second: an average since the
    start would pass it for minutes; the window sees the stall after one grace period."""
    rate = DataRate(FLOOR)
    feed(rate, [(0, 0), (1, 131072)] + [(t, 131072 + 3 * t) for t in range(2, 8)])
    assert rate.too_slow()


def test_a_pause_in_waiting_starts_the_window_again() -> None:
    rate = DataRate(FLOOR)
    feed(rate, [(t, 0) for t in range(4)])
    rate.observe(False, 0, 4)  # the client caught up: nothing queued for it
    feed(rate, [(5, 0), (6, 0)])
    assert rate.waited() == 1
    assert not rate.too_slow()


def test_below_floor_ranks_within_grace_and_needs_two_samples() -> None:
    rate = DataRate(FLOOR)
    rate.observe(True, 0, 0)
    assert rate.below_floor() is None  # no time measured yet
    rate.observe(True, 100, 2)
    assert rate.below_floor() == 50.0
    rate.observe(True, 10_000, 3)
    assert rate.below_floor() is None


def test_a_zero_floor_is_off() -> None:
    rate = DataRate(RateFloor(0, 5))
    feed(rate, [(t, 0) for t in range(20)])
    assert not rate.too_slow()
    assert rate.below_floor() is None
