"""The edge protocol in process, with a mock transport and a mock loop, as uvicorn tests its own
protocols: the header deadline, the connection cap, the data-rate floors and the send buffer,
each driven by hand (bytes in, timers fired, time moved), with no server and no socket.

tests/integration/test_connections.py and test_outbound.py run the same rules against a real
server; these tests reach the branches a real client can hardly time.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.edge import protocol
from app.edge.protocol import (
    BUSY_REPLY,
    SLOW_BODY_REPLY,
    WRITE_BUFFER_HIGH,
    EdgeH11Protocol,
    EdgeLimits,
    EdgeStats,
)
from app.edge.rates import RateFloor

GET = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
POST_HEAD = b"POST / HTTP/1.1\r\nHost: example.org\r\nContent-Length: 100000\r\n\r\n"
FLOOR = RateFloor(240.0, 5.0)


class FakeSocket:
    """What the protocol asks of the socket (SO_SNDBUF) and uvicorn (the two addresses)."""

    def __init__(self) -> None:
        self.options: dict[tuple[int, int], int] = {}
        self.family = socket.AF_INET

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options[(level, name)] = value


class Transport:
    """A transport that keeps what is written, and a write buffer the test sets: the bytes the
    kernel has not taken yet."""

    def __init__(self) -> None:
        self.written = b""
        self.buffered = 0
        self.closed = False
        self.aborted = False
        self.read_paused = False
        self.high_mark: int | None = None
        self.socket = FakeSocket()

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return {
            "sockname": ("127.0.0.1", 8000),
            "peername": ("127.0.0.1", 50000),
            "socket": self.socket,
        }.get(key, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_mark = high

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False


class Timer:
    def __init__(self, loop: Loop, delay: float, callback: Callable[..., None], args: Any) -> None:
        self.loop, self.delay, self.callback, self.args = loop, delay, callback, args

    def cancel(self) -> None:
        if self in self.loop.timers:
            self.loop.timers.remove(self)


class Loop:
    """Timers fire when the test says; a request's app task is kept, never run."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.tasks: list[Any] = []

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        timer = Timer(self, delay, callback, args)
        self.timers.append(timer)
        return timer

    def create_task(self, coroutine: Any, **_: Any) -> Any:
        coroutine.close()  # the app is not what these tests are about
        self.tasks.append(coroutine)

        class Task:
            def add_done_callback(self, callback: Callable[..., None]) -> None:
                pass

        return Task()

    def fire(self, after: float) -> None:
        """Run every timer due within ``after`` seconds."""
        for timer in [t for t in self.timers if t.delay <= after]:
            self.timers.remove(timer)
            timer.callback(*timer.args)


async def app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never run")


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., EdgeLimits]:
    """The edge's limits for the test, with fresh per-process counters and a fresh watch."""
    monkeypatch.setattr(protocol, "STATS", EdgeStats())
    monkeypatch.setattr(protocol, "_WATCH", protocol._Watch())
    monkeypatch.setattr(protocol, "_limits", None)

    def set_limits(**overrides: Any) -> EdgeLimits:
        values: dict[str, Any] = {"max_connections": 10, "header_timeout_seconds": 10.0}
        values.update(overrides)
        chosen = EdgeLimits(**values)
        protocol.configure(chosen)
        return chosen

    return set_limits


@pytest.fixture
def connect() -> Iterator[Callable[[], EdgeH11Protocol]]:
    """New connections to one server: the same loop and server state for all of them."""
    loop, state = Loop(), ServerState()
    config = Config(app=app, log_config=None)

    def make() -> EdgeH11Protocol:
        edge = EdgeH11Protocol(config=config, server_state=state, app_state={}, _loop=loop)
        edge.connection_made(Transport())  # type: ignore[arg-type]  # the mock stands in
        return edge

    yield make


def transport_of(edge: EdgeH11Protocol) -> Transport:
    found = edge.metered._transport
    assert isinstance(found, Transport)
    return found


def loop_of(edge: EdgeH11Protocol) -> Loop:
    assert isinstance(edge.loop, Loop)
    return edge.loop


def test_a_connection_that_sends_no_headers_is_closed_at_the_deadline(limits, connect) -> None:
    limits(header_timeout_seconds=10.0)
    edge = connect()
    loop_of(edge).fire(after=9.0)
    assert not transport_of(edge).closed
    loop_of(edge).fire(after=10.0)
    assert transport_of(edge).closed and transport_of(edge).written == b""
    assert protocol.STATS.header_timeouts == 1


def test_headers_in_time_stop_the_deadline(limits, connect) -> None:
    limits(header_timeout_seconds=10.0)
    edge = connect()
    edge.data_received(GET)
    loop_of(edge).fire(after=60.0)
    assert not transport_of(edge).closed
    assert protocol.STATS.header_timeouts == 0


def test_headers_a_byte_at_a_time_still_meet_the_deadline(limits, connect) -> None:
    """Trickling the headers does not move the deadline: it is set once per request."""
    limits(header_timeout_seconds=10.0)
    edge = connect()
    for byte in GET[:-2]:
        edge.data_received(bytes([byte]))
    loop_of(edge).fire(after=10.0)
    assert transport_of(edge).closed
    assert protocol.STATS.header_timeouts == 1


def test_the_send_buffer_and_the_write_high_mark_are_bounded(limits, connect) -> None:
    limits(send_buffer_bytes=16 * 1024)
    transport = transport_of(connect())
    assert transport.socket.options == {(socket.SOL_SOCKET, socket.SO_SNDBUF): 16 * 1024}
    assert transport.high_mark == WRITE_BUFFER_HIGH


def test_at_the_cap_a_new_connection_closes_the_one_waiting_longest_for_headers(
    limits, connect
) -> None:
    limits(max_connections=2)
    oldest, busy = connect(), connect()
    busy.data_received(GET)  # a request under way: not waiting for headers
    newest = connect()
    assert transport_of(oldest).closed and not transport_of(busy).closed
    assert not transport_of(newest).closed
    assert protocol.STATS.evicted == 1 and protocol.STATS.refused == 0


def test_at_the_cap_the_slowest_connection_below_a_floor_is_closed(limits, connect) -> None:
    limits(max_connections=2, response_floor=FLOOR)
    slow, fast = connect(), connect()
    for edge, taken in ((slow, 10), (fast, 1_000_000)):
        edge.data_received(GET)
        transport_of(edge).buffered = 64 * 1024  # a reply is waiting for the client
        edge.check_rates(100.0)
        edge.metered.written += taken  # what the client took in the second that follows
        edge.check_rates(101.0)
    connect()
    assert transport_of(slow).aborted and not transport_of(fast).closed
    assert protocol.STATS.evicted_slow == 1


def test_at_the_cap_with_every_connection_making_progress_the_new_one_gets_503(
    limits, connect
) -> None:
    limits(max_connections=2)
    first, second = connect(), connect()
    first.data_received(GET)
    second.data_received(GET)
    newest = connect()
    assert transport_of(newest).written == BUSY_REPLY and transport_of(newest).closed
    assert not transport_of(first).closed and not transport_of(second).closed
    assert protocol.STATS.refused == 1


def test_a_body_sent_below_the_floor_gets_408_after_the_grace(limits, connect) -> None:
    limits(body_floor=FLOOR)
    edge = connect()
    edge.data_received(POST_HEAD + b"x" * 100)
    for second in range(5):
        assert edge.check_rates(100.0 + second) is None
        edge.data_received(b"x" * 10)  # 10 B/s, under the 240 B/s floor
    assert edge.check_rates(105.0) == "slow_body"
    assert transport_of(edge).written.endswith(SLOW_BODY_REPLY) and transport_of(edge).closed
    assert edge.cycle.disconnected  # the app reading the body sees the client gone
    assert protocol.STATS.slow_body == 1


def test_a_body_at_the_floor_goes_on(limits, connect) -> None:
    limits(body_floor=FLOOR)
    edge = connect()
    edge.data_received(POST_HEAD)
    for second in range(10):
        assert edge.check_rates(100.0 + second) is None
        edge.data_received(b"x" * 300)
    assert not transport_of(edge).closed


def test_a_reply_read_below_the_floor_is_aborted_after_the_grace(limits, connect) -> None:
    limits(response_floor=FLOOR)
    edge = connect()
    edge.data_received(GET)
    transport = transport_of(edge)
    transport.buffered = 64 * 1024
    for second in range(5):
        assert edge.check_rates(100.0 + second) is None
        edge.metered.written += 10  # the kernel takes 10 B/s of the reply
    assert edge.check_rates(105.0) == "slow_read"
    assert transport.aborted  # close() would wait for a reader that does not read
    assert protocol.STATS.slow_read == 1


def test_no_floor_is_checked_while_nothing_waits_on_the_client(limits, connect) -> None:
    limits(response_floor=FLOOR, body_floor=FLOOR)
    edge = connect()
    edge.data_received(GET)  # a request whose reply the app has not written yet
    for second in range(20):
        assert edge.check_rates(100.0 + second) is None
    assert not transport_of(edge).closed


class Clock:
    """Stands in for the time module where the protocol reads ``time.monotonic()``."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_watch_samples_every_connection_and_logs_one_line(
    limits, connect, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(protocol, "time", clock)  # the watch reads time.monotonic()
    limits(response_floor=RateFloor(240.0, protocol.TICK_SECONDS))
    edges = [connect() for _ in range(3)]
    for edge in edges:
        edge.data_received(GET)
        transport_of(edge).buffered = 1024
    loop = loop_of(edges[0])
    caplog.set_level("INFO", logger="app.edge")
    loop.fire(after=protocol.TICK_SECONDS)  # first sample of each
    clock.now += protocol.TICK_SECONDS
    loop.fire(after=protocol.TICK_SECONDS)  # second: nothing taken in a tick
    assert all(transport_of(edge).aborted for edge in edges)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.edge"]
    assert len(lines) == 1 and "closed 3 connection(s)" in lines[0], lines


def test_closed_connections_leave_the_count(limits, connect) -> None:
    limits()
    edges = [connect() for _ in range(3)]
    assert protocol.STATS.open == 3
    for edge in edges:
        edge.connection_lost(None)
    assert protocol.STATS.open == 0 and not protocol.STATS.connections
