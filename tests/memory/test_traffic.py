"""The request path: traffic accounting, the sampled RSS check, and the ASGI middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.memory.traffic import Activity, ThresholdCheck, TrafficMiddleware
from tests.memory.conftest import FakeClock

QUIET = frozenset({"/healthz", "/metrics"})  # what a service passes in as not traffic

MB = 1024 * 1024


class CountingRss:
    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


def test_activity_counts_requests_and_idle_time() -> None:
    clock = FakeClock()
    activity = Activity(clock)
    activity.begin()
    activity.begin()
    clock.now += 10
    assert (activity.in_flight, activity.requests) == (2, 2)
    assert activity.idle_for() == 0.0  # busy
    activity.end()
    clock.now += 3
    assert activity.idle_for() == 0.0  # one still in flight
    activity.end()
    clock.now += 2.5
    assert activity.in_flight == 0
    assert activity.idle_for() == pytest.approx(2.5)


def test_threshold_check_reads_rss_at_most_once_per_interval() -> None:
    clock = FakeClock()
    rss = CountingRss(10 * MB)
    over: list[int] = []
    check = ThresholdCheck(100 * MB, over.append, check_min_seconds=1.0, read_rss=rss, clock=clock)
    for _ in range(50):
        check.check()
    assert rss.reads == 1
    clock.now += 0.999
    check.check()
    assert rss.reads == 1
    clock.now += 0.001
    check.check()
    check.check()
    assert (rss.reads, check.checks) == (2, 2)
    assert over == []


def test_threshold_check_calls_back_over_the_threshold_only() -> None:
    clock = FakeClock()
    rss = CountingRss(100 * MB)
    over: list[int] = []
    check = ThresholdCheck(100 * MB, over.append, check_min_seconds=1.0, read_rss=rss, clock=clock)
    check.check()
    assert over == []  # at the threshold is not over it
    rss.value = 100 * MB + 1
    clock.now += 1
    check.check()
    clock.now += 0.5
    check.check()  # sampled out: no second callback
    assert over == [100 * MB + 1]


def asgi_call(app: Callable[..., object], scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return sent


def http(path: str) -> Scope:
    return {"type": "http", "path": path, "method": "GET", "headers": []}


class Inner:
    """An ASGI app that records how many requests were in flight while it ran."""

    def __init__(self, activity: Activity, fail: bool = False) -> None:
        self.activity = activity
        self.fail = fail
        self.in_flight_seen: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.in_flight_seen.append(self.activity.in_flight)
        if self.fail:
            raise RuntimeError("handler failed")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def make_middleware(fail: bool = False) -> tuple[TrafficMiddleware, Inner, ThresholdCheck]:
    activity = Activity()
    inner = Inner(activity, fail)
    check = ThresholdCheck(0, lambda rss: None, check_min_seconds=0.000001, read_rss=lambda: 1)
    middleware = TrafficMiddleware(inner, activity, check, quiet_paths=QUIET)  # type: ignore[arg-type]
    return middleware, inner, check


def test_middleware_counts_traffic_and_checks_memory() -> None:
    middleware, inner, check = make_middleware()
    sent = asgi_call(middleware, http("/bulk/sync"))
    assert sent[0]["status"] == 204
    assert inner.in_flight_seen == [1]
    assert (middleware.activity.requests, middleware.activity.in_flight) == (1, 0)
    assert check.checks == 1


@pytest.mark.parametrize("path", sorted(QUIET))
def test_middleware_ignores_probes_and_operator_calls(path: str) -> None:
    middleware, inner, check = make_middleware()
    asgi_call(middleware, http(path))
    assert inner.in_flight_seen == [0]
    assert middleware.activity.requests == 0
    assert check.checks == 0


def test_no_path_is_quiet_unless_the_app_says_so() -> None:
    activity = Activity()
    inner = Inner(activity)
    asgi_call(TrafficMiddleware(inner, activity, None), http("/healthz"))  # type: ignore[arg-type]
    assert inner.in_flight_seen == [1] and activity.requests == 1


def test_middleware_ends_a_failed_request_too() -> None:
    middleware, _, check = make_middleware(fail=True)
    with pytest.raises(RuntimeError, match="handler failed"):
        asgi_call(middleware, http("/bulk/async"))
    assert (middleware.activity.requests, middleware.activity.in_flight) == (1, 0)
    assert check.checks == 1


def test_middleware_passes_lifespan_through_untouched() -> None:
    middleware, inner, check = make_middleware()
    asgi_call(middleware, {"type": "lifespan"})
    assert inner.in_flight_seen == [0]
    assert middleware.activity.requests == 0
    assert check.checks == 0


def test_middleware_without_a_guard_still_counts() -> None:
    activity = Activity()
    middleware = TrafficMiddleware(Inner(activity), activity, None)  # type: ignore[arg-type]
    asgi_call(middleware, http("/bulk/sync"))
    assert activity.requests == 1


def test_a_request_waiting_on_its_client_does_not_count_as_work() -> None:
    clock = FakeClock()
    activity = Activity(clock)
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clock.now += 5
        assert activity.idle_for() == 0.0  # the app at work
        await receive()
        assert activity.idle_for() == 0.0  # at work again once the body is in
        calls.append("read")

    async def receive() -> Message:
        clock.now += 30  # a body that stalls for 30 s
        assert activity.waiting_on_client == 1
        assert activity.idle_for() == 35.0  # waiting on the client: idle, for the release
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    middleware = TrafficMiddleware(app, activity, check=None)
    asyncio.run(middleware({"type": "http", "path": "/bulk/sync"}, receive, send))
    assert calls == ["read"] and activity.waiting_on_client == 0
