"""The request path's part: note traffic, and check memory without slowing requests down.

The check is sampled (RSS is read at most once per ``check_min_seconds``) and never releases
inline: a release on the request path would add its pause to that request's latency, so the
check only wakes the cleanup loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .measure import rss_bytes

log = logging.getLogger(__name__)

class Activity:
    """Requests in flight and when traffic last stopped, for idle detection.

    A request waiting on its client (a body that trickles in, or stalls) is not work: while every
    request in flight waits so, the service counts as idle, and a stalled upload cannot hold the
    idle release off.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight = 0
        self.waiting_on_client = 0
        self.requests = 0
        self.last_seen = clock()

    def begin(self) -> None:
        self.in_flight += 1
        self.requests += 1
        self.last_seen = self._clock()

    def end(self) -> None:
        self.in_flight -= 1
        self.last_seen = self._clock()

    def idle_for(self) -> float:
        """Seconds since the last request began or finished; 0 while any is being worked on."""
        if self.in_flight > self.waiting_on_client:
            return 0.0
        return self._clock() - self.last_seen


class ThresholdCheck:
    """``check_memory_and_gc()`` of the seed guide, made cheap and non-blocking."""

    def __init__(
        self,
        threshold_bytes: int,
        on_over_threshold: Callable[[int], None],
        check_min_seconds: float = 1.0,
        read_rss: Callable[[], int] = rss_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold_bytes = threshold_bytes
        self._on_over = on_over_threshold
        self._every = check_min_seconds
        self._read_rss = read_rss
        self._clock = clock
        self._next_check = 0.0
        self.checks = 0
        self.failures = 0

    def check(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._every
        self.checks += 1
        try:
            rss = self._read_rss()
        except Exception as exc:  # it runs after a response: never let it reach the server
            self.failures += 1
            log.warning("[memory-guard] cannot read RSS: %s: %s", type(exc).__name__, exc)
            return
        if rss > self.threshold_bytes:
            self._on_over(rss)


class TrafficMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): counts traffic and samples RSS.

    ``quiet_paths`` are not traffic: a health check, a scrape or an operator polling a debug
    page every second must not keep the service from ever looking idle.
    """

    def __init__(
        self,
        app: ASGIApp,
        activity: Activity,
        check: ThresholdCheck | None,
        quiet_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.activity = activity
        self.check = check
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        activity = self.activity

        async def receive_counted() -> Message:
            activity.waiting_on_client += 1
            try:
                return await receive()
            finally:
                activity.waiting_on_client -= 1

        activity.begin()
        try:
            await self.app(scope, receive_counted, send)
        finally:
            self.activity.end()
            if self.check is not None:
                self.check.check()
