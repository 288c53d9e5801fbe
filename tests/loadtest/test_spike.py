"""The spike plan as a pure function of run time: no Locust, no network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.spike import DROP_RATE, PlanError, SpikePlan, plan_from_env, target_at

PLAN = SpikePlan(users=8, spawn_rate=0, ramp_seconds=4, hold_seconds=10, idle_seconds=6)


def test_ramp_and_hold_aim_at_every_user_at_the_rate_that_fills_the_ramp() -> None:
    assert target_at(PLAN, 0.0) == (8, 2.0)
    assert target_at(PLAN, 3.9) == (8, 2.0)
    assert target_at(PLAN, 13.9) == (8, 2.0)


def test_users_drop_to_zero_at_once_when_the_hold_ends() -> None:
    assert target_at(PLAN, 14.0) == (0, DROP_RATE)
    assert target_at(PLAN, 19.9) == (0, DROP_RATE)


def test_plan_ends_after_the_idle_window() -> None:
    assert target_at(PLAN, 20.0) is None
    assert target_at(PLAN, 1e6) is None


def test_explicit_spawn_rate_wins_and_a_zero_ramp_starts_everyone_at_once() -> None:
    assert SpikePlan(users=8, spawn_rate=3, ramp_seconds=4).effective_spawn_rate == 3
    assert SpikePlan(users=8, ramp_seconds=0, hold_seconds=5).effective_spawn_rate == 8


@pytest.mark.parametrize(
    "changes",
    [
        {"users": 0},
        {"spawn_rate": -1},
        {"idle_seconds": -1},
        {"ramp_seconds": 0, "hold_seconds": 0},
        {"hold_seconds": float("nan")},
    ],
)
def test_a_plan_that_cannot_make_a_spike_is_refused(changes: dict[str, float]) -> None:
    with pytest.raises(PlanError):
        SpikePlan().with_overrides(**changes)


def test_environment_overrides_the_standard_plan() -> None:
    plan = plan_from_env(
        {"SPIKE_USERS": "3", "SPIKE_HOLD_SECONDS": "7.5", "SPIKE_IDLE_SECONDS": ""}
    )
    assert (plan.users, plan.hold_seconds) == (3, 7.5)
    assert plan.idle_seconds == SpikePlan().idle_seconds


def test_environment_value_that_is_not_a_number_names_the_variable() -> None:
    with pytest.raises(PlanError, match="SPIKE_USERS"):
        plan_from_env({"SPIKE_USERS": "many"})


@given(
    users=st.integers(1, 500),
    ramp=st.floats(0, 600),
    hold=st.floats(0.1, 600),
    idle=st.floats(0, 600),
    at=st.floats(0, 3000),
)
def test_target_is_all_users_then_none_then_the_end(
    users: int, ramp: float, hold: float, idle: float, at: float
) -> None:
    plan = SpikePlan(users=users, ramp_seconds=ramp, hold_seconds=hold, idle_seconds=idle)
    target = target_at(plan, at)
    if at >= plan.total_seconds:
        assert target is None
    else:
        assert target is not None
        count, rate = target
        assert count == (users if at < plan.load_seconds else 0)
        assert rate > 0
