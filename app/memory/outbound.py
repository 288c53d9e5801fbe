"""The way out: reply bodies go to the server in slices, each handed over once the last was taken.

An ASGI app hands the server a reply body in one message, and the server writes it to the
connection's transport, which keeps whatever the socket does not take at once: a whole copy per
slow reader, for as long as the reader takes. Cut into slices, the body goes out under the
server's flow control instead: uvicorn (h11 and httptools, under gunicorn too) waits before each
write until the transport's buffer is under its low-water mark (16 KiB), so a slow reader holds one
slice plus that buffer, not the reply. A stored value is sent from its one copy, a slice at a time
(``StoredResponse``), never copied whole per client.

What large replies hold is counted (``queued_bytes``: per reply in progress, the bytes not yet taken
by the server, up to its window of two slices) and reserved from the budget's outbound part:
without room a new large reply waits in the same kind of bounded queue as admission, or is
answered 503 with Retry-After before anything of it is sent. Small replies (one slice or less) and
the quiet paths (health checks, scrapes) are never held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admission import Admission, Refused, Reservation
from .gate import json_reply

log = logging.getLogger(__name__)

DEFAULT_SLICE_BYTES = 64 * 1024


class Outbound:
    """This worker's large replies in progress, what they hold, and the pool they reserve from."""

    def __init__(self, slice_bytes: int = DEFAULT_SLICE_BYTES, pool: Admission | None = None):
        if slice_bytes <= 0:
            raise ValueError("slice_bytes must be positive")
        self.slice_bytes = slice_bytes
        # One slice inside the server, one in its write buffer (uvicorn writes when the buffer is
        # under 16 KiB, so it holds less than a slice more): what a reply can hold at once.
        self.window_bytes = 2 * slice_bytes
        self.pool = pool
        self.responses = 0  # large replies in progress
        self.queued_bytes = 0  # what they hold, each up to its window
        self.sliced = 0  # large replies started since the start
        self.refused = 0  # large replies answered 503 for want of room


class ReplySlicer:
    """Pure ASGI middleware: slices large reply bodies and awaits each slice."""

    def __init__(
        self,
        app: ASGIApp,
        outbound: Outbound,
        quiet_paths: Iterable[str] = (),
        retry_after_seconds: int = 2,
    ) -> None:
        self.app = app
        self.outbound = outbound
        self.quiet_paths = frozenset(quiet_paths)
        self.retry_after_seconds = retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admit = self.outbound.pool is not None and scope.get("path") not in self.quiet_paths
        reply = _Reply(self.outbound, send, admit, self.retry_after_seconds)
        try:
            await self.app(scope, receive, reply.send)
        finally:
            reply.finish()


class _Reply:
    """One reply on its way out: the start held until the first body says whether it is large."""

    def __init__(self, outbound: Outbound, send: Send, admit: bool, retry_after: int) -> None:
        self._outbound = outbound
        self._send = send
        self._admit = admit
        self._retry_after = retry_after
        self._start: Message | None = None
        self._large = False
        self._refused = False
        self._held = 0
        self._reservation: Reservation | None = None

    async def send(self, message: Message) -> None:
        if self._refused:
            return  # answered 503 already: the app's reply goes nowhere
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body":
            await self._flush_start()
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._start is not None:
            if (more or len(body) > self._outbound.slice_bytes) and not await self._begin_large():
                return
            await self._flush_start()
        await self._send_sliced(body, more)
        if not more:
            self.finish()

    async def _begin_large(self) -> bool:
        """Count a large reply in, after a reservation of its window; False when refused."""
        outbound = self._outbound
        if self._admit and outbound.pool is not None:
            try:
                self._reservation = await outbound.pool.reserve(outbound.window_bytes)
            except Refused as refused:
                self._refused = True
                self._start = None
                outbound.refused += 1
                await json_reply(
                    self._send, 503, f"no room for another large reply: {refused.detail}",
                    reason=f"outbound_{refused.reason}",
                    headers=[(b"retry-after", str(self._retry_after).encode())],
                )
                return False
        self._large = True
        outbound.responses += 1
        outbound.sliced += 1
        return True

    async def _flush_start(self) -> None:
        if self._start is not None:
            start, self._start = self._start, None
            await self._send(start)

    async def _send_sliced(self, body: bytes, more: bool) -> None:
        size = self._outbound.slice_bytes
        if len(body) <= size:
            self._hold(len(body))
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
            return
        view = memoryview(body)
        for offset in range(0, len(body), size):
            self._hold(len(body) - offset)
            piece = bytes(view[offset : offset + size])  # servers take bytes, not views
            last = offset + size >= len(body)
            await self._send(
                {"type": "http.response.body", "body": piece, "more_body": more or not last}
            )

    def _hold(self, remaining: int) -> None:
        if not self._large:
            return
        held = min(remaining, self._outbound.window_bytes)
        self._outbound.queued_bytes += held - self._held
        self._held = held

    def finish(self) -> None:
        """Idempotent: the reply ended, the client went, or the app raised."""
        if self._large:
            self._large = False
            self._outbound.responses -= 1
            self._outbound.queued_bytes -= self._held
            self._held = 0
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None


class StoredResponse(Response):
    """A stored value sent a slice at a time, each slice read anew by ``read(offset, size)``.

    Nothing holds the whole value for the reader: a slow client costs one slice, and a value
    dropped from its store while it is being sent is not kept alive for it. ``read`` returns
    None once the value is gone; the reply then ends short (the server closes the connection, so
    the client sees a truncated body, never a wrong one). ``in_thread`` runs each read in a worker
    thread: for a store across a network, whose round trip must not stall the event loop.
    """

    def __init__(
        self,
        read: Callable[[int, int], bytes | None],
        length: int,
        media_type: str,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
        headers: dict[str, str] | None = None,
        in_thread: bool = False,
    ) -> None:
        self.read = read
        self.in_thread = in_thread
        self.length = length
        self.slice_bytes = slice_bytes
        super().__init__(
            None, 200, {**(headers or {}), "content-length": str(length)}, media_type
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        try:
            await self._send_slices(scope, send, gone)
        finally:
            watcher.cancel()

    async def _send_slices(self, scope: Scope, send: Send, gone: asyncio.Event) -> None:
        """The slices, until the value ends, is gone, or the client is: a server takes the sends
        of a client that left and drops them, so without the last check every slice would still
        be read for nobody, each holding its reservation and a thread."""
        await send(
            {"type": "http.response.start", "status": self.status_code,
             "headers": self.raw_headers}
        )
        offset = 0
        while offset < self.length and scope.get("method") != "HEAD":
            if gone.is_set():
                return
            if self.in_thread:
                piece = await asyncio.to_thread(self.read, offset, self.slice_bytes)
            else:
                piece = self.read(offset, self.slice_bytes)
            if not piece:
                log.info(
                    "[memory-outbound] %s: stored value gone after %d of %d bytes; reply cut",
                    scope.get("path"), offset, self.length,
                )
                return
            offset += len(piece)
            await send(
                {"type": "http.response.body", "body": piece, "more_body": offset < self.length}
            )
        if offset == 0 or scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the server says the client disconnected. A server's receive waits once
    the request's body has ended; one that answers again at once (a bare test harness) is not
    watched further, or this loop would spin without ever giving the event loop back."""
    ended = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
        if ended:
            return
        ended = not message.get("more_body", False)
