"""uvicorn's h11 protocol with the two limits uvicorn lacks: a deadline for a request's headers
and a cap on open connections. `uvicorn --http app.edge.protocol:GuardedH11Protocol`.

uvicorn closes a keep-alive connection that stays silent (``--timeout-keep-alive``), but not a
new connection that sends nothing, nor one that sends its headers a byte at a time: each holds a
file descriptor for as long as the client likes, until the process has none left and the
listening socket stops accepting (health checks included). Here every connection waiting for
headers has a deadline, and at the cap a new connection closes the one that has waited longest
for headers instead of being refused; only when every open connection is busy with a request is
the new one answered 503. Body deadlines are the admission gate's (app/memory/gate.py), which
knows when the app is reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import h11
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.h11_impl import H11Protocol

# Descriptors kept for everything else a worker opens: SQLite files per thread, logs, pipes.
FD_RESERVE = 128
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass
class EdgeLimits:
    max_connections: int
    header_timeout_seconds: float


@dataclass
class EdgeStats:
    """Per process; read by the app's metrics collector."""

    open: int = 0
    evicted: int = 0  # idle connections closed to make room for a new one
    refused: int = 0  # new connections answered 503: every open one was busy
    header_timeouts: int = 0


STATS = EdgeStats()


class EdgeCollector(Collector):
    """The connection limits at work; zero where the server runs another protocol."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("edge_connections_open", "Open connections.", value=STATS.open)
        closed = CounterMetricFamily(
            "edge_connections_closed",
            "Connections the edge closed: idle ones evicted at the cap, new ones refused with "
            "503 when every open one was busy, and ones that sent no headers in time.",
            labels=["reason"],
        )
        closed.add_metric(["evicted"], STATS.evicted)
        closed.add_metric(["refused"], STATS.refused)
        closed.add_metric(["header_timeout"], STATS.header_timeouts)
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
        configure(
            EdgeLimits(
                settings.max_connections or default_max_connections(),
                settings.header_timeout_seconds,
            )
        )
    assert _limits is not None
    return _limits


def _busy_reply() -> bytes:
    body = b'{"detail":"too many open connections","reason":"connections"}'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        # uvicorn's own arguments, passed through untouched: their types are uvicorn's to check.
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0

    # uvicorn's H11Protocol narrows asyncio's BaseTransport to Transport; so does this override.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = _current_limits()
        STATS.open = len(self.connections)
        if len(self.connections) > limits.max_connections and not self._make_room():
            STATS.refused += 1
            transport.write(_busy_reply())
            transport.close()
            return
        self._await_headers(limits)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)
        STATS.open = len(self.connections)

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

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for headers; False if none waits."""
        idle = [
            c for c in self.connections
            if c is not self and isinstance(c, GuardedH11Protocol) and c._header_timer is not None
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._waiting_since)
        oldest._stop_header_timer()
        oldest._close_quietly()
        STATS.evicted += 1
        return True
