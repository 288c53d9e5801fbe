"""The budget split: derived parts fit the limit, given parts that do not fit are refused."""

from __future__ import annotations

import pytest

from app.memory.budget import MIN_HEADROOM_BYTES, BudgetError, split_budget

MB = 1024 * 1024


def test_derived_parts_add_up_to_the_limit() -> None:
    budget = split_budget(500 * MB, base_bytes=56 * MB, cache_bytes=64 * MB)
    assert budget.headroom_bytes == 50 * MB  # 10% of the limit
    assert budget.outbound_bytes == 30 * MB  # 6% of the limit
    assert budget.inflight_bytes == 500 * MB - 56 * MB - 64 * MB - 50 * MB - 30 * MB
    parts = budget.base_bytes + budget.cache_bytes + budget.inflight_bytes
    assert parts + budget.outbound_bytes + budget.headroom_bytes == budget.limit_bytes
    assert budget.high_water_bytes == 450 * MB


def test_small_limits_keep_a_minimum_headroom() -> None:
    budget = split_budget(100 * MB, base_bytes=40 * MB, cache_bytes=8 * MB)
    assert budget.headroom_bytes == MIN_HEADROOM_BYTES


def test_given_parts_are_kept() -> None:
    budget = split_budget(
        500 * MB, 50 * MB, 64 * MB, headroom_bytes=30 * MB, inflight_bytes=200 * MB,
        outbound_bytes=8 * MB,
    )
    assert (budget.headroom_bytes, budget.inflight_bytes) == (30 * MB, 200 * MB)
    assert budget.outbound_bytes == 8 * MB


def test_an_outbound_part_that_does_not_fit_is_refused() -> None:
    with pytest.raises(BudgetError, match="outbound 480"):
        split_budget(500 * MB, 50 * MB, 64 * MB, outbound_bytes=480 * MB)


@pytest.mark.parametrize(
    ("base", "cache", "headroom", "inflight"),
    [
        (60, 64, None, 400),  # an in-flight part the rest leaves no room for
        (60, 400, 50, None),  # a cache that leaves nothing in flight
        (60, 64, 380, None),  # headroom that leaves nothing in flight
    ],
)
def test_parts_that_do_not_fit_are_refused_with_every_figure(
    base: int, cache: int, headroom: int | None, inflight: int | None
) -> None:
    with pytest.raises(BudgetError) as info:
        split_budget(
            500 * MB,
            base * MB,
            cache * MB,
            None if headroom is None else headroom * MB,
            None if inflight is None else inflight * MB,
        )
    message = str(info.value)
    assert "does not fit the limit of 500.0MB" in message
    assert f"start {base:.1f}MB" in message and f"cache {cache:.1f}MB" in message
    assert "\n" not in message
