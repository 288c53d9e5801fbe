"""A admitted route whose costliest request cannot fit the in-flight budget stops startup."""

from __future__ import annotations

import pytest

from app.budget import check_admission_fits
from app.config import ConfigError
from app.frame import Admitted
from app.memory import RouteCost
from app.memory.measure import MB


def guard(*routes: RouteCost, max_body_mb: float = 8) -> Admitted:
    return Admitted(routes=routes, max_body_bytes=int(max_body_mb * MB), limit_name="MAX_BODY_MB")


def refusal(g: Admitted, inflight_mb: float) -> str:
    with pytest.raises(ConfigError) as info:
        check_admission_fits(g, int(inflight_mb * MB), ["CACHE_MAX_MB"])
    (line,) = info.value.lines
    return line


def test_a_body_route_fits_up_to_its_largest_body_times_its_factor() -> None:
    post = RouteCost("POST", "/bulk", cost_factor=12.0)
    check_admission_fits(guard(post), 96 * MB)
    line = refusal(guard(post), 95)
    assert line.startswith(
        "configuration error: MAX_BODY_MB=8 needs 96.0MB (12x its size) in flight, more than "
        "this worker's in-flight budget of 95.0MB"
    )
    assert "lower MAX_BODY_MB, CACHE_MAX_MB or WEB_CONCURRENCY" in line


def test_a_declared_reply_larger_than_the_budget_is_named() -> None:
    report = RouteCost("GET", "/reports/{id}", reply_bytes=120 * MB)
    post = RouteCost("POST", "/bulk", cost_factor=12.0)
    check_admission_fits(guard(post, report), 120 * MB)
    line = refusal(guard(post, report), 100)
    assert "GET /reports/{id} declares a reply that needs 120.0MB in flight" in line
    assert "lower CACHE_MAX_MB, its reply_bytes or WEB_CONCURRENCY" in line


def test_a_guard_without_routes_fits() -> None:
    check_admission_fits(guard(), 0)
