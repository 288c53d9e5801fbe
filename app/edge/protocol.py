"""uvicorn's h11 protocol with the limits uvicorn lacks: a deadline for a request's headers, a cap
on open connections, minimum data rates both ways, and a bounded kernel send buffer.
`uvicorn --http app.edge.protocol:EdgeH11Protocol`.

uvicorn closes a keep-alive connection that stays silent (``--timeout-keep-alive``), but not a
new connection that sends nothing, nor one that sends its headers a byte at a time, nor one that
sends its body or reads its reply a few bytes a second: each holds a file descriptor (and, for a
reply, the bytes queued for it) for as long as the client likes. Here every connection waiting for
headers has a deadline; a connection that sends its body or reads its reply slower than the
floor (app/edge/rates.py) is closed; and at the cap a new connection closes the connection doing
least for its client: first the one that has waited longest for headers, then the slowest one
below the floor. Only when every open connection is making progress is the new one answered 503.
Body deadlines are the admission gate's (app/memory/gate.py), which knows when the app is reading;
the gate also keeps the body floor, under any server, and on an admitted route its 408 comes first
(it keeps the exact moment, this samples once a second): the floor here covers other routes'
bodies and ranks connections for the cap.

The kernel's send buffer is bounded per connection (SO_SNDBUF): left to autotuning it grows to
megabytes per slow reader, which cgroup v2 charges to the container (``sock`` in memory.stat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import h11
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.edge.rates import DataRate, RateFloor

log = logging.getLogger("app.edge")

# Descriptors kept for everything else a worker opens: SQLite files per thread, logs, pipes.
FD_RESERVE = 128
DEFAULT_MAX_CONNECTIONS = 1000


TICK_SECONDS = 1.0  # how often the data rates are sampled
# The transport's write buffer: uvicorn makes a reply's next send wait while the buffer is over the
# high mark, until it is under the low mark (a quarter of it). A slow reader's reply, its window
# set back to 4 KiB slices after each wait, hands over 4, 8 and 16 KiB from under the low mark
# before one waits: the buffer peaks at the high mark plus one such slice, 32 KiB here (asyncio's
# default high mark, which uvicorn's httptools protocol keeps, is 64 KiB).
WRITE_BUFFER_HIGH = 16 * 1024
NO_FLOOR = RateFloor(0.0, 5.0)


@dataclass(frozen=True)
class EdgeLimits:
    max_connections: int
    header_timeout_seconds: float
    body_floor: RateFloor = NO_FLOOR  # request bodies, while the app reads one
    response_floor: RateFloor = NO_FLOOR  # replies, while bytes wait for the socket
    send_buffer_bytes: int = 0  # SO_SNDBUF asked for; 0 leaves the kernel's autotuning


@dataclass
class EdgeStats:
    """Per process; read by the app's metrics collector."""

    open: int = 0
    evicted: int = 0  # connections waiting for headers, closed to make room for a new one
    evicted_slow: int = 0  # connections below a data-rate floor, closed to make room
    refused: int = 0  # new connections answered 503: every open one was making progress
    header_timeouts: int = 0
    slow_body: int = 0  # closed: sent the request body slower than the floor
    slow_read: int = 0  # closed: read the reply slower than the floor
    connections: set[EdgeH11Protocol] = field(default_factory=set, repr=False)

    def write_buffer_bytes(self) -> int:
        """Reply bytes written by the server that the kernel has not taken yet."""
        return sum(c.transport.get_write_buffer_size() for c in self.connections)


STATS = EdgeStats()


class EdgeCollector(Collector):
    """The connection limits at work; zero where the server runs another protocol."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("edge_connections_open", "Open connections.", value=STATS.open)
        yield GaugeMetricFamily(
            "edge_write_buffer_bytes",
            "Reply bytes queued in this worker for clients, not yet taken by the kernel.",
            value=STATS.write_buffer_bytes(),
        )
        closed = CounterMetricFamily(
            "edge_connections_closed",
            "Connections the edge closed, by reason: waiting for headers (evicted) or below a "
            "rate floor (evicted_slow) to make room at the cap; new ones refused with 503 when "
            "every open one made progress; no headers in time; a body sent or a reply read "
            "slower than the floor.",
            labels=["reason"],
        )
        for reason, count in (
            ("evicted", STATS.evicted),
            ("evicted_slow", STATS.evicted_slow),
            ("refused", STATS.refused),
            ("header_timeout", STATS.header_timeouts),
            ("slow_body", STATS.slow_body),
            ("slow_read", STATS.slow_read),
        ):
            closed.add_metric([reason], count)
        yield closed


_limits: EdgeLimits | None = None


def default_max_connections() -> int:
    """Below the soft descriptor limit, so the process never runs out of descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(16, min(DEFAULT_MAX_CONNECTIONS, soft - FD_RESERVE))


def configure(limits: EdgeLimits) -> None:
    global _limits
    _limits = limits


def _current_limits() -> EdgeLimits:
    """The limits from the service's settings, read once per worker on its first connection."""
    if _limits is None:
        from app.config import load_settings

        settings = load_settings()
        grace = settings.min_rate_grace_seconds
        configure(
            EdgeLimits(
                settings.max_connections or default_max_connections(),
                settings.header_timeout_seconds,
                body_floor=RateFloor(settings.min_body_rate_bytes, grace),
                response_floor=RateFloor(settings.min_response_rate_bytes, grace),
                send_buffer_bytes=settings.send_buffer_kb * 1024,
            )
        )
    assert _limits is not None
    return _limits


def _closing_reply(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    """A whole JSON reply written to the transport by the edge itself, then the connection
    closes: for a connection no request cycle answers (refused at the cap, or cut mid-body)."""
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n" + extra
        + b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
        + body
    )


BUSY_REPLY = _closing_reply(
    b"503 Service Unavailable",
    b'{"detail":"too many open connections","reason":"connections"}',
    b"retry-after: 1\r\n",
)
SLOW_BODY_REPLY = _closing_reply(
    b"408 Request Timeout", b'{"detail":"request body sent slower than the minimum data rate"}'
)


class MeteredTransport:
    """The connection's transport, counting the bytes written to it: with the write buffer's
    size, that tells how many bytes the kernel has taken, which is the reply's data rate."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self._transport.write(data)

    def taken(self) -> int:
        """Bytes the kernel has accepted so far."""
        return self.written - self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Watch:
    """One timer per worker that samples every connection's data rates while any is open."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def ensure(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None:
            self._timer = loop.call_later(TICK_SECONDS, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = time.monotonic()
        closed = {"slow_body": 0, "slow_read": 0}
        for connection in list(STATS.connections):
            reason = connection.check_rates(now)
            if reason is not None:
                closed[reason] += 1
        if any(closed.values()):
            limits = _current_limits()
            log.info(
                "[edge] closed %d connection(s) below the data-rate floor for %gs: %d sending "
                "their body slower than %g B/s, %d reading their reply slower than %g B/s",
                sum(closed.values()),
                limits.response_floor.grace_seconds,
                closed["slow_body"],
                limits.body_floor.min_bytes_per_second,
                closed["slow_read"],
                limits.response_floor.min_bytes_per_second,
            )
        if STATS.connections:
            self.ensure(loop)


_WATCH = _Watch()


class EdgeH11Protocol(H11Protocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        # uvicorn's own arguments, passed through untouched: their types are uvicorn's to check.
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0
        self._received = 0
        limits = _current_limits()
        self._body_rate = DataRate(limits.body_floor)
        self._reply_rate = DataRate(limits.response_floor)

    # uvicorn's H11Protocol narrows asyncio's BaseTransport to Transport; so does this override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = _current_limits()
        _bound_send_buffer(transport, limits.send_buffer_bytes)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.metered = MeteredTransport(transport)
        super().connection_made(cast(asyncio.Transport, self.metered))
        STATS.connections.add(self)
        STATS.open = len(self.connections)
        if len(self.connections) > limits.max_connections and not self._make_room():
            STATS.refused += 1
            transport.write(BUSY_REPLY)
            transport.close()
            return
        self._await_headers(limits)
        _WATCH.ensure(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        STATS.connections.discard(self)
        super().connection_lost(exc)
        STATS.open = len(self.connections)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived
            self._stop_header_timer()

    def on_response_complete(self) -> None:
        # Armed first: the call below may start a pipelined request, which disarms it again.
        if not self.transport.is_closing():
            self._await_headers(_current_limits())
        super().on_response_complete()

    def check_rates(self, now: float) -> str | None:
        """Sample both directions; close the connection if one is below its floor."""
        if self.transport.is_closing():
            return None
        self._body_rate.observe(self._awaiting_body(), self._received, now)
        self._reply_rate.observe(
            self.transport.get_write_buffer_size() > 0, self.metered.taken(), now
        )
        if self._reply_rate.too_slow():
            STATS.slow_read += 1
            self._abort()
            return "slow_read"
        if self._body_rate.too_slow():
            STATS.slow_body += 1
            self._time_out_body()
            return "slow_body"
        return None

    def _awaiting_body(self) -> bool:
        """The app is reading a body the client is still sending (not held back by the server:
        uvicorn stops reading while the app has not taken what came, and before 100-continue)."""
        cycle = self.cycle
        return (
            cycle is not None
            and not cycle.response_complete
            and self.conn.their_state is h11.SEND_BODY
            and not self.flow.read_paused
            and not cycle.waiting_for_100_continue
        )

    def _slowest_rate(self) -> float | None:
        """The lower of the two directions' rates while below their floors, else None."""
        rates = [r for r in (self._body_rate.below_floor(), self._reply_rate.below_floor())
                 if r is not None]
        return min(rates) if rates else None

    def _await_headers(self, limits: EdgeLimits) -> None:
        self._stop_header_timer()
        self._waiting_since = time.monotonic()
        self._header_timer = self.loop.call_later(
            limits.header_timeout_seconds, self._headers_overdue
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        STATS.header_timeouts += 1
        self._close_quietly()

    def _close_quietly(self) -> None:
        if self.transport.is_closing():
            return
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()

    def _abort(self) -> None:
        """Close now, dropping the bytes queued for the client: close() would wait for a
        reader that does not read."""
        self._stop_header_timer()
        self.transport.abort()

    def _time_out_body(self) -> None:
        """A 408 where no reply has started (the client may still read one), then close; the
        app sees the client gone. Else abort."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self._abort()
            return
        cycle.response_started = True  # the app's own reply, if any, is not written
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.write(SLOW_BODY_REPLY)
        self.transport.close()

    def _make_room(self) -> bool:
        """Close the connection doing least for its client: the one that has waited longest for
        headers, else the slowest below a data-rate floor; False if every one makes progress."""
        others = [c for c in self.connections if c is not self and isinstance(c, EdgeH11Protocol)
                  and not c.transport.is_closing()]
        idle = [c for c in others if c._header_timer is not None]
        if idle:
            oldest = min(idle, key=lambda c: c._waiting_since)
            oldest._stop_header_timer()
            oldest._close_quietly()
            STATS.evicted += 1
            return True
        slow = [(rate, c) for c in others if (rate := c._slowest_rate()) is not None]
        if slow:
            _, slowest = min(slow, key=lambda pair: pair[0])
            slowest._abort()
            STATS.evicted_slow += 1
            return True
        return False


def _bound_send_buffer(transport: asyncio.BaseTransport, nbytes: int) -> None:
    """SO_SNDBUF for this connection (the kernel doubles it for its bookkeeping)."""
    sock = transport.get_extra_info("socket")
    if nbytes <= 0 or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)


