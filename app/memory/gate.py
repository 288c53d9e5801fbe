"""The ASGI side of admission control: an admitted route pays for a body as it arrives, and for
the work on it once it has arrived.

The app names the routes it admits and what each costs per body byte (parsed, validated and
processed, a request holds several times its body). While the body is read, the request holds
only what has arrived plus a lookahead (at least ``lookahead_bytes``, else as much again as has
arrived, never past the declared length): the bytes themselves, which are all a body costs before
the app works on it. When the body has ended, the reservation grows to ``length x factor``,
waiting its turn for room like any reservation. A client that declares a large body and sends it
slowly therefore holds what it has sent, not what it has declared: reconnecting, many addresses
or a chunked body without a length win it nothing, and a fast client's body grows its
reservation a handful of times, without waiting while there is room. Half-read bodies cannot
hold the room each other waits for: each holds only its own bytes, and the wait for the work's
cost happens with the whole body in hand, behind requests whose work finishes.

The body is read here, under a deadline and a rate floor (bodyrate.py), and handed to the app
whole; the reservation is returned when the app returns, however it returns: response sent,
client gone, or an error. A body that misses either gets 408 and gives its reservation back.

Refusals are answered so the client can read them. Most clients send the whole body before they
read a reply, and closing a socket with unread data in it resets the connection, so a refused
body of bounded size is read and dropped first, then the reply goes out with
``Connection: close``. A body declared over the size limit is not read at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admission import Admission, Refused, Reservation
from .bodyrate import BodyFloor, BodyWatch
from .budget import MemoryBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteCost:
    """A route and what a request to it costs: ``cost_factor`` bytes per body byte (a body
    parsed and worked on), plus ``reply_bytes`` for a reply built per request, held until it
    has been sent (a report rendered for each caller; not a stored value sent in slices).
    ``path`` is exact, or has ``{name}`` segments that match one path segment each."""

    method: str
    path: str
    cost_factor: float = 0.0  # bytes held per body byte while the request is handled
    reply_bytes: int = 0

    def cost(self, body_bytes: int) -> int:
        return math.ceil(body_bytes * self.cost_factor) + self.reply_bytes


def _template(path: str) -> re.Pattern[str]:
    """``/reports/{id}`` -> a pattern matching one segment where the name stands."""
    parts = re.split(r"\{[^/{}]+\}", path)
    return re.compile("[^/]+".join(re.escape(part) for part in parts) + r"\Z")


@dataclass(frozen=True)
class AdmissionConfig:
    """Everything ``MemoryManager.install`` needs to put admission control in front of routes."""

    budget: MemoryBudget  # this worker's split; admission spends its in-flight part
    routes: Sequence[RouteCost]
    max_body_bytes: int
    queue_limit: int = 16
    max_wait_seconds: float = 5.0
    body_timeout_seconds: float = 30.0
    limit_name: str = "the body size limit"  # what the 413 calls it: the app's setting
    body_floor: BodyFloor = BodyFloor()  # a body arriving slower is answered 408
    lookahead_bytes: int = 64 * 1024  # held ahead of a body's arrival, at least


@dataclass(frozen=True)
class _Head:
    """What the request's headers say about its body."""

    length: int | None  # declared Content-Length; None when chunked or absent
    encoding: str
    expects_continue: bool
    malformed: str | None = None

    @classmethod
    def parse(cls, headers: Iterable[tuple[bytes, bytes]]) -> _Head:
        lengths: list[bytes] = []
        encoding = b""
        expect = False
        for name, value in headers:
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"content-encoding":
                encoding = value.strip().lower()
            elif name == b"expect":
                expect = value.strip().lower() == b"100-continue"
        if len(set(lengths)) > 1 or any(not v.isdigit() for v in lengths):
            return cls(None, "", expect, "Content-Length must be one whole number")
        length = int(lengths[0]) if lengths else None
        return cls(length, encoding.decode("latin-1"), expect)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class AdmissionGate:
    """Pure ASGI middleware; routes it does not admit pass straight through."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        routes: Iterable[RouteCost],
        max_body_bytes: int,
        body_timeout_seconds: float = 30.0,
        retry_after_seconds: int = 2,
        limit_name: str = "the body size limit",
        body_floor: BodyFloor | None = None,
        lookahead_bytes: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.limit_name = limit_name  # what the 413 calls the limit: the app's setting
        self.admission = admission
        routes = list(routes)
        self.routes = {(r.method.upper(), r.path): r for r in routes if "{" not in r.path}
        self.templates = [
            (r.method.upper(), _template(r.path), r) for r in routes if "{" in r.path
        ]
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.retry_after_seconds = retry_after_seconds
        self.body_floor = body_floor or BodyFloor()
        self.lookahead_bytes = lookahead_bytes

    def _route(self, scope: Scope) -> RouteCost | None:
        if scope["type"] != "http":
            return None
        method, path = scope["method"], scope["path"]
        route = self.routes.get((method, path))
        if route is None:
            route = next(
                (r for m, pattern, r in self.templates if m == method and pattern.match(path)),
                None,
            )
        return route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        head = _Head.parse(scope["headers"])
        if head.malformed is not None:
            await json_reply(send, 400, head.malformed)
            return
        if head.encoding not in ("", "identity"):
            await self._refuse(receive, send, head, 415, f"Content-Encoding {head.encoding!r} "
                               "is not supported: send the body uncompressed")
            return
        if head.length is not None and head.length > self.max_body_bytes:
            await json_reply(send, 413, f"body of {head.length} bytes is over the "
                         f"{self.max_body_bytes}-byte limit ({self.limit_name})")
            return
        # A body of unknown length may grow to the limit, where bodies cost.
        bound = head.length if head.length is not None else self.max_body_bytes
        if not route.cost_factor:
            bound = 0
        try:
            if head.length is not None and route.cost(bound) > self.admission.capacity_bytes:
                raise self.admission.too_large(route.cost(bound))  # before a byte is read
            reservation = await self.admission.reserve(route.cost(0) + self._ahead(0, bound))
        except Refused as refused:
            await self._refuse(receive, send, head, 503, refused.detail, reason=refused.reason)
            return
        try:
            body = await self._read(
                scope, receive, send, head, reservation, route.cost(0), bound
            )
            if body is None:
                return
            try:  # the body is whole: now the work on it
                await reservation.grow(route.cost(len(body)))
            except Refused as refused:
                await self._reply_refused(send, refused)
                return
            reservation.resize(route.cost(len(body)))  # a chunked body that ended small
            await self.app(scope, _replay(body, receive), send)
        finally:
            reservation.release()

    def _ahead(self, arrived: int, bound: int) -> int:
        """Body bytes held while ``arrived`` have come: those, plus a lookahead of as much
        again (at least ``lookahead_bytes``), never past ``bound``."""
        return min(bound, arrived + max(arrived, self.lookahead_bytes))

    async def _reply_refused(self, send: Send, refused: Refused) -> None:
        headers = [(b"retry-after", str(self.retry_after_seconds).encode())]
        await json_reply(send, 503, refused.detail, reason=refused.reason, headers=headers)

    async def _read(
        self, scope: Scope, receive: Receive, send: Send, head: _Head, reservation: Reservation,
        fixed: int, bound: int,
    ) -> bytes | None:
        """The whole body, or None once the request has been answered or the client is gone.
        The reservation follows the body's arrival (``fixed`` plus the bytes held ahead)."""
        loop = asyncio.get_running_loop()
        watch = BodyWatch(self.body_floor, self.body_timeout_seconds, loop.time())
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(watch.deadline()) as timer:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise _BodyTooLarge
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
                    watch.arrived(loop.time(), size)
                    if bound and fixed + size > reservation.nbytes:
                        timer.reschedule(None)  # waiting for room is not the client's time
                        try:
                            waited = await reservation.grow(fixed + self._ahead(size, bound))
                        except Refused as refused:  # the rest is dropped as it comes, then 503
                            chunks.clear()
                            reservation.resize(0)
                            await self._refuse(receive, send, head, 503, refused.detail,
                                               reason=refused.reason)
                            return None
                        watch.paused(waited)
                    timer.reschedule(watch.deadline())
        except _ClientGone:
            log.info(
                "[memory-admission] %s %s: client disconnected after %d body bytes; "
                "reservation returned", scope["method"], scope["path"], size,
            )
        except _BodyTooLarge:
            await json_reply(
                send, 413, f"body is over the {self.max_body_bytes}-byte limit ({self.limit_name})"
            )
        except TimeoutError:
            await self._timed_out(scope, send, watch, loop.time(), size)
        return None

    async def _timed_out(
        self, scope: Scope, send: Send, watch: BodyWatch, now: float, size: int
    ) -> None:
        floor = self.body_floor
        if watch.below_floor(now):
            log.info(
                "[memory-admission] %s %s: body arrived slower than %g B/s over %gs (%d bytes); "
                "answered 408", scope["method"], scope["path"], floor.min_bytes_per_second,
                floor.grace_seconds, size,
            )
            detail = (f"body sent slower than the minimum data rate of "
                      f"{floor.min_bytes_per_second:g} bytes/s")
        else:
            log.info(
                "[memory-admission] %s %s: body not complete after %gs (%d bytes); answered 408",
                scope["method"], scope["path"], self.body_timeout_seconds, size,
            )
            detail = f"body not received within {self.body_timeout_seconds:g}s"
        await json_reply(send, 408, detail)

    async def _refuse(
        self, receive: Receive, send: Send, head: _Head, status: int, detail: str,
        reason: str | None = None,
    ) -> None:
        """Answer a refusal the client can read: drop a bounded body first, then close."""
        if not head.expects_continue and not await self._drain(receive, head):
            return
        headers = [(b"retry-after", str(self.retry_after_seconds).encode())] if reason else []
        await json_reply(send, status, detail, reason=reason, headers=headers)

    async def _drain(self, receive: Receive, head: _Head) -> bool:
        """Read and drop the body, keeping nothing; False if the client went away. A body past
        its bound or its time gets the reply anyway, and the connection is closed on it."""
        limit = head.length if head.length is not None else self.max_body_bytes
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while size <= limit:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return False
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def json_reply(
    send: Send, status: int, detail: str, reason: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A small JSON reply that ends the connection: the request's body was not (fully) read."""
    payload = {"detail": detail} if reason is None else {"detail": detail, "reason": reason}
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *(headers or []),
        ],
    })
    await send({"type": "http.response.body", "body": body})
