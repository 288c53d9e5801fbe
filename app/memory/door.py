"""The door: at most so many requests are worked on at once; the rest wait outside it.

A request inside an ASGI app holds far more than its connection: the framework's scope copies,
its request object, the solved dependencies, a coroutine frame per middleware, and a wait for a
worker thread when the route is synchronous. A burst of a thousand requests that all enter at
once holds all of that a thousand times over while they queue for forty threads. Measured on
the reference service under uvicorn (lab/readers), a thousand connections each asking a
synchronous route for a small reply grew its cgroup by about 45 KB each; asking its health check,
answered on the event loop, 14 KB; connected and silent, 8 KB. With the door, 28 KB. Outside the
door a waiting request holds only its connection and scope.

A request holds its place from when it enters until its reply starts, or until it first reads its
body. Past those points the memory it holds is bounded elsewhere: a reply by the outbound window
(outbound.py), a body by admission and the body floor (gate.py, bodyrate.py). So a slow reader
or a slow sender never keeps the door shut for others, and a reply that streams (server-sent
events) leaves at once. A request that waits long before answering (a long poll) does hold its
place for that long: give such a service a wider door, or put those routes among the quiet ones.

A request that has waited ``max_wait_seconds`` outside is answered 503 with Retry-After: the
service is overloaded, and saying so beats holding the client. Quiet paths (health checks,
scrapes) and anything but HTTP go straight in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .gate import json_reply

log = logging.getLogger(__name__)

# Twice AnyIO's default thread limit: a synchronous route's request waits for a thread inside the
# door, an asynchronous one's awaits its I/O there; twice the threads keeps both busy.
DEFAULT_WORKING = 80
DEFAULT_MAX_WAIT_SECONDS = 10.0


class Door:
    """The places inside and the requests waiting for one: one door per worker."""

    def __init__(
        self, limit: int = DEFAULT_WORKING, max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
    ) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive: leave the door out to have none")
        if max_wait_seconds < 0:
            raise ValueError("max_wait_seconds must not be negative")
        self.limit = limit
        self.max_wait_seconds = max_wait_seconds
        self.working = 0  # requests inside: entered, reply not started, body not yet read
        self.waiting = 0
        self.refused = 0  # answered 503 after waiting max_wait_seconds, since start
        self._places = asyncio.Semaphore(limit)  # first come, first served

    async def enter(self) -> bool:
        """Take a place, waiting behind those before; False after ``max_wait_seconds``."""
        if self._places.locked():
            self.waiting += 1
            try:
                async with asyncio.timeout(self.max_wait_seconds):
                    await self._places.acquire()
            except TimeoutError:
                self.refused += 1
                return False
            finally:
                self.waiting -= 1
        else:
            await self._places.acquire()  # returns at once: a place is free
        self.working += 1
        return True

    def leave(self) -> None:
        self.working -= 1
        self._places.release()


class DoorMiddleware:
    """Pure ASGI middleware: a request enters through ``door`` and leaves it at its reply's
    start, at its first read of the body, or when the app returns, whichever comes first."""

    def __init__(
        self,
        app: ASGIApp,
        door: Door,
        quiet_paths: Iterable[str] = (),
        retry_after_seconds: int = 1,
    ) -> None:
        self.app = app
        self.door = door
        self.quiet_paths = frozenset(quiet_paths)
        self.retry_after_seconds = retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        if not await self.door.enter():
            log.info(
                "[memory-door] %s %s: answered 503 after %.0f s outside, %d requests working",
                scope.get("method"), scope.get("path"), self.door.max_wait_seconds,
                self.door.working,
            )  # fmt: skip
            await json_reply(
                send, 503, "too many requests in progress; try again shortly",
                reason="door_full",
                headers=[(b"retry-after", str(self.retry_after_seconds).encode())],
            )  # fmt: skip
            return
        inside = _Inside(self.door, receive, send)
        try:
            await self.app(scope, inside.receive, inside.send)
        finally:
            inside.leave()


class _Inside:
    """One request's place, given up once."""

    def __init__(self, door: Door, receive: Receive, send: Send) -> None:
        self._door = door
        self._receive = receive
        self._send = send
        self._inside = True

    def leave(self) -> None:
        if self._inside:
            self._inside = False
            self._door.leave()

    async def receive(self) -> Message:
        self.leave()  # the client's pace from here: the body floor and admission bound it
        return await self._receive()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.leave()  # the reply's window bounds it from here
        await self._send(message)
