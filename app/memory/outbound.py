"""The way out: reply bodies go to the server in slices, each handed over once the last was taken.

An ASGI app hands the server a reply body in one message, and the server writes it to the
connection's transport, which keeps whatever the socket does not take at once: a whole copy per
slow reader, for as long as the reader takes. Cut into slices, the body goes out under the
server's flow control instead: uvicorn (h11 and httptools, under gunicorn too) makes a send wait
while the transport's buffer is over its high-water mark, until it is under a quarter of it, so a
slow reader holds that buffer, not the reply. A stored value is sent from its one copy, a slice
at a time (``StoredResponse``), never copied whole per client.

What large replies hold is counted (``queued_bytes``: per reply in progress, the slice in hand and
what the server may not have sent yet, up to two full slices) and two full slices are reserved
from the budget's outbound part: without room a new large reply waits in the same kind of
bounded queue as admission, or is answered 503 with Retry-After before anything of it is sent.
Small replies (one slice or less) and the quiet paths (health checks, scrapes) are never held
back.

Each reply's slices are sized by its ``Window``, as TCP sizes a congestion window: the first slice
is small (4 KiB), each one the server takes at once doubles the next, up to the full 64 KiB, and
one the server makes wait sets the window back to the small size. A fast reader gets full slices
after a few; a slow one gets small slices only. Before each slice after the first, until a full
slice and the probe after it have been taken at once, the reply sends the server an empty part
(``PROBE``, allowed by ASGI): the server's flow control makes that wait while the client is
behind, so a reply waiting for its reader holds no slice of its own, only what the transport
already has. A reader that took a full slice at once, and stayed under the transport's mark, is
fast: its slices go back to back, without a probe between each.

The floor: a send (a slice or a probe) that the server does not take within the grace period
plus the time the bytes ahead of it need at ``min_bytes_per_second`` ends the reply (``TooSlow``).
The app returns without completing its reply, which every server answers by closing the
connection; one log line says so. It is the rate floor at the ASGI level, under any server;
app/edge measures the socket itself where uvicorn runs its h11 protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .admission import Admission, Refused, Reservation
from .gate import json_reply

log = logging.getLogger(__name__)

DEFAULT_SLICE_BYTES = 64 * 1024
MIN_SLICE_BYTES = 4 * 1024  # a reply's first slice, and every slice of a reader that is behind
# A send the server takes within this time, plus the bytes ahead of it at KEEP_UP_RATE, counts as
# taken at once: the reader keeps up. A fast reader's transport drains in well under a
# millisecond per slice; the slack covers an event loop busy with other requests.
KEEP_UP_SLACK_SECONDS = 0.01
KEEP_UP_BYTES_PER_SECOND = 1_000_000
# The empty part sent before each slice after the first: the server's flow control holds it
# while the client is behind, so the next slice is read only once the server can take it.
PROBE: Message = {"type": "http.response.body", "body": b"", "more_body": True}
# Where the reply slicer puts a reply's Window in its scope, for StoredResponse to size reads by.
WINDOW_KEY = "memory.reply_window"


@dataclass(frozen=True)
class ReplyFloor:
    """The slowest a reader may take its reply: bytes per second (0 turns the floor off) after a
    grace period. The defaults are Kestrel's MinResponseDataRate: 240 bytes/s after 5 s."""

    min_bytes_per_second: float = 240.0
    grace_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        return self.min_bytes_per_second > 0

    def deadline(self, ahead_bytes: int) -> float:
        """Seconds a send may wait with ``ahead_bytes`` still to be taken before it."""
        return self.grace_seconds + ahead_bytes / self.min_bytes_per_second


class TooSlow(Exception):
    """A send the server did not take within its time at the floor: the reply ends here."""

    def __init__(self, ahead_bytes: int, seconds: float) -> None:
        super().__init__(f"{ahead_bytes} bytes not taken in {seconds:.1f} s")
        self.ahead_bytes = ahead_bytes
        self.seconds = seconds


class ClientGone(Exception):
    """The server could not write a slice because the connection has closed: the reply ends.

    uvicorn's httptools protocol tells only the newest request on a connection that its client
    left, so a reply to an earlier, pipelined request learns it from its next write, which uvloop
    refuses with a RuntimeError; asyncio's transports raise an OSError such as a reset."""


def closed_connection(exc: BaseException) -> bool:
    """Whether a server's send failed because the connection is gone, not because the app broke
    the protocol (a RuntimeError of that kind must still surface)."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, RuntimeError) and "closed" in str(exc)


class Window:
    """One reply's slice size, grown while the server takes each send at once, set back to the
    smallest when it makes one wait; and the floor's deadline on every send.

    ``ahead_bytes`` is what was handed to the server since it last made the reply wait, up to two
    full slices (uvicorn's transport holds at most its high-water mark, 64 KiB by default, plus
    one slice): what the next send may have to wait for.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_SLICE_BYTES,
        min_bytes: int = MIN_SLICE_BYTES,
        floor: ReplyFloor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.min_bytes = min(min_bytes, max_bytes)
        self.size = self.min_bytes
        self.floor = floor or ReplyFloor(0.0)
        self._clock = clock
        self.ahead_bytes = 0
        self.sent_bytes = 0
        self.waits = 0  # sends the server made wait: the reader was behind
        self.proven = False  # a full slice, and the probe after it, taken at once since a wait
        self._full_taken = False  # the last send was a full slice taken at once
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._due: float | None = None  # loop time the send in progress must be taken by
        self._expired = False

    async def hand(self, send: Send, message: Message) -> None:
        """``send(message)``, timed: the window follows how long the server took it; past the
        floor's deadline the send is cancelled and TooSlow raised."""
        ahead = self.ahead_bytes
        started = self._clock()
        if self.floor.enabled:
            await self._send_by_deadline(send, message, self.floor.deadline(ahead))
        else:
            await send(message)
        self.taken(len(message.get("body", b"")), self._clock() - started, ahead)

    async def _send_by_deadline(self, send: Send, message: Message, seconds: float) -> None:
        """One timer per reply, moved only when a send's deadline comes before the one it is
        set for: asyncio.timeout on every send would cost a timer per slice and per probe."""
        loop = asyncio.get_running_loop()
        self._due = due = loop.time() + seconds
        self._task = asyncio.current_task()  # a streamed reply may send from a task of its own
        if self._timer is None or self._timer.when() > due:
            self.close()
            self._timer = loop.call_at(due, self._check)
        try:
            await send(message)
        except asyncio.CancelledError:
            if not self._expired or self._task is None:
                raise
            self._task.uncancel()
            raise TooSlow(self.ahead_bytes, seconds) from None
        finally:
            self._due = None

    def _check(self) -> None:
        """The timer: cancel the send in progress if it is past its deadline, else wait on."""
        self._timer = None
        if self._due is None or self._task is None:
            return  # no send waiting: the next one sets the timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self._due:
            self._timer = loop.call_at(self._due, self._check)
            return
        self._expired = True
        self._task.cancel()

    def close(self) -> None:
        """Idempotent: the reply ended; its timer goes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def probing(self) -> bool:
        """Whether the next slice waits on an empty part first: until a full-size slice, and the
        probe after it, have been taken at once. Not merely while the window is below full size:
        a reader whose kernel buffers took the small slices at once reaches full size with its
        transport already over the high-water mark, and a full slice read for it then would wait
        in its hand (measured: 64 KiB more per slow reader). A reader at full speed gets its
        slices without one between each (an extra send per slice made a fast read of 9.6 MB on
        loopback a tenth slower); the first send it makes wait sets the window back, and the
        probes resume."""
        return not self.proven

    def taken(self, nbytes: int, waited: float, ahead: int) -> None:
        """The server took a send of ``nbytes`` after ``waited`` seconds with ``ahead`` bytes
        before it: a slice taken at once doubles the window (slow start; a probe taken at once
        only confirms it), a send that waited sets it back and counts a wait."""
        self.sent_bytes += nbytes
        if waited <= KEEP_UP_SLACK_SECONDS + ahead / KEEP_UP_BYTES_PER_SECOND:
            # Proven once a probe after a full slice is taken at once: the transport took that
            # slice and stayed under its mark (a send that starts over it waits).
            self.proven = self.proven or (not nbytes and self._full_taken)
            self._full_taken = nbytes >= self.max_bytes
            if nbytes:
                self.size = min(2 * self.size, self.max_bytes)
            self.ahead_bytes = min(self.ahead_bytes + nbytes, 2 * self.max_bytes)
        else:
            self.waits += 1
            self.proven = self._full_taken = False
            self.size = self.min_bytes
            self.ahead_bytes = nbytes


class Outbound:
    """This worker's large replies in progress, what they hold, and the pool they reserve from."""

    def __init__(
        self,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
        pool: Admission | None = None,
        floor: ReplyFloor | None = None,
        min_slice_bytes: int = MIN_SLICE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slice_bytes <= 0 or min_slice_bytes <= 0:
            raise ValueError("slice_bytes and min_slice_bytes must be positive")
        self.slice_bytes = slice_bytes
        self.min_slice_bytes = min(min_slice_bytes, slice_bytes)
        self.floor = floor or ReplyFloor()
        self._clock = clock
        # The most a reply may hold at once, reserved for it: a full slice in hand and one in the
        # server's write buffer. A reader that falls behind holds far less (its window's small
        # slices), but it may be a fast one until then.
        self.window_bytes = 2 * slice_bytes
        self.pool = pool
        self.responses = 0  # large replies in progress
        self.queued_bytes = 0  # what they hold, each up to its window
        self.sliced = 0  # large replies started since the start
        self.refused = 0  # large replies answered 503 for want of room
        self.cut_slow = 0  # replies ended: a send not taken within its time at the floor

    def window(self) -> Window:
        """A new reply's window: it starts small and grows while its reader keeps up."""
        return Window(self.slice_bytes, self.min_slice_bytes, self.floor, self._clock)


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
        scope[WINDOW_KEY] = reply.window
        try:
            await self.app(scope, receive, reply.send)
        except ClientGone:
            log.info(
                "[memory-outbound] %s %s: client gone after %d bytes; reply stopped",
                scope.get("method"),
                scope.get("path"),
                reply.window.sent_bytes,
            )
        except TooSlow as slow:
            # Returning without the reply's end: every server then closes the connection.
            self.outbound.cut_slow += 1
            log.info(
                "[memory-outbound] %s %s: reply cut after %d bytes: %s, under the floor of "
                "%g B/s; connection closed",
                scope.get("method"),
                scope.get("path"),
                reply.window.sent_bytes,
                slow,
                self.outbound.floor.min_bytes_per_second,
            )
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
        self.window = outbound.window()
        self._cut: TooSlow | ClientGone | None = None

    async def send(self, message: Message) -> None:
        if self._refused:
            return  # answered 503 already: the app's reply goes nowhere
        if self._cut is not None:
            raise self._cut  # an app that caught it and sent on: the reply has ended
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
                    self._send,
                    503,
                    f"no room for another large reply: {refused.detail}",
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
        try:
            await self._cut_into_slices(body, more)
        except TooSlow as slow:
            self._cut = slow
            raise
        except (OSError, RuntimeError) as exc:
            if not closed_connection(exc):
                raise
            self._cut = ClientGone(str(exc))
            raise self._cut from None

    async def _cut_into_slices(self, body: bytes, more: bool) -> None:
        """Each slice the window's size when it is cut; a probe before each after the first."""
        window = self._window_or_none()
        if window is None or len(body) <= window.size:
            self._hold(len(body))
            message = {"type": "http.response.body", "body": body, "more_body": more}
            await (window.hand(self._send, message) if window else self._send(message))
            return
        view = memoryview(body)
        offset = 0
        while offset < len(body):
            if offset and window.probing:
                await window.hand(self._send, PROBE)
            piece = bytes(view[offset : offset + window.size])  # servers take bytes, not views
            self._hold(len(piece))
            offset += len(piece)
            last = offset >= len(body)
            await window.hand(
                self._send,
                {"type": "http.response.body", "body": piece, "more_body": more or not last},
            )

    def _window_or_none(self) -> Window | None:
        """The window for a large reply's sends; a small one's single send goes as it came."""
        return self.window if self._large else None

    def _hold(self, nbytes: int) -> None:
        """Count what the reply holds as it hands ``nbytes`` over: those, and what it handed
        the server since the server last made it wait (the server may hold those still)."""
        if not self._large:
            return
        held = min(nbytes + self.window.ahead_bytes, self._outbound.window_bytes)
        self._outbound.queued_bytes += held - self._held
        self._held = held

    def finish(self) -> None:
        """Idempotent: the reply ended, the client went, or the app raised."""
        self.window.close()
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
        super().__init__(None, 200, {**(headers or {}), "content-length": str(length)}, media_type)

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
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        window = scope.get(WINDOW_KEY)
        offset = 0
        while offset < self.length and scope.get("method") != "HEAD":
            size = self.slice_bytes
            # Under the reply slicer its window sizes the reads of a large value; a value of one
            # slice or less goes whole in one part, a small reply the slicer never holds back.
            if isinstance(window, Window) and self.length > self.slice_bytes:
                if offset and window.probing:
                    await send(PROBE)  # returns once the server can take more
                size = min(size, window.size)
            if gone.is_set():
                return
            if self.in_thread:
                piece = await asyncio.to_thread(self.read, offset, size)
            else:
                piece = self.read(offset, size)
            if not piece:
                log.info(
                    "[memory-outbound] %s: stored value gone after %d of %d bytes; reply cut",
                    scope.get("path"),
                    offset,
                    self.length,
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
