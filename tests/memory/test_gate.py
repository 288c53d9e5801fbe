"""The admission gate as ASGI: what it reserves, reads, hands on, answers and gives back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.memory.admission import Admission
from app.memory.bodyrate import BodyFloor
from app.memory.gate import AdmissionGate, RouteCost

LIMIT = 1000
FACTOR = 4.0


class App:
    """Records the body it was handed and what the pool held meanwhile."""

    def __init__(self, pool: Admission, fail: bool = False) -> None:
        self.pool = pool
        self.fail = fail
        self.bodies: list[bytes] = []
        self.reserved_while_running: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        self.reserved_while_running.append(self.pool.reserved_bytes)
        if self.fail:
            raise RuntimeError("handler failed")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(path: str = "/bulk", headers: Sequence[tuple[bytes, bytes]] = ()) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers)}


def length(n: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


class Client:
    """Feeds the request's messages (then waits, or disconnects) and collects the reply."""

    def __init__(self, chunks: Sequence[bytes], then: str = "end") -> None:
        """``then``: "end" sends the body whole; "wait" stalls and "disconnect" leaves after the
        chunks, the body unfinished."""
        last = len(chunks) - 1 if then == "end" else len(chunks)
        self.messages: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < last}
            for i, c in enumerate(chunks)
        ]
        self.then = then
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.read < len(self.messages):
            self.read += 1
            return self.messages[self.read - 1]
        if self.then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return self.sent[0]["status"] if self.sent else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"]) if self.sent else {}

    @property
    def json(self) -> dict[str, object]:
        return json.loads(self.sent[1]["body"])


def gate(pool: Admission, app: App, body_timeout: float = 5.0) -> AdmissionGate:
    return AdmissionGate(
        app, pool, [RouteCost("POST", "/bulk", FACTOR)], LIMIT, body_timeout,
        limit_name="MAX_BODY_MB",
    )


def call(g: AdmissionGate, s: Scope, client: Client) -> None:
    asyncio.run(g(s, client.receive, client.send))


def test_an_admitted_body_is_reserved_at_its_cost_handed_on_whole_and_given_back() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"ab", b"cd", b"e"])
    call(gate(pool, app), scope(headers=[length(5)]), client)
    assert app.bodies == [b"abcde"]
    assert app.reserved_while_running == [5 * FACTOR]
    assert client.status == 201 and pool.reserved_bytes == 0


def test_a_chunked_body_reserves_its_largest_size_then_what_it_used() -> None:
    pool = Admission(10_000)
    app = App(pool)
    call(gate(pool, app), scope(), Client([b"x" * 10, b"y" * 10]))
    assert app.reserved_while_running == [20 * FACTOR]  # shrunk from LIMIT x FACTOR
    assert pool.reserved_bytes == 0


def test_the_reservation_comes_back_when_the_handler_fails() -> None:
    pool = Admission(10_000)
    with pytest.raises(RuntimeError):
        call(gate(pool, App(pool, fail=True)), scope(headers=[length(1)]), Client([b"x"]))
    assert pool.reserved_bytes == 0


def test_a_declared_body_over_the_limit_is_413_unread_and_closed() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"x" * 10])
    call(gate(pool, app), scope(headers=[length(LIMIT + 1)]), client)
    assert client.status == 413 and client.read == 0 and not app.bodies
    assert client.headers[b"connection"] == b"close"
    assert "MAX_BODY_MB" in str(client.json["detail"])


def test_a_chunked_body_that_grows_past_the_limit_is_413() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"x" * 600, b"y" * 600, b"z"])
    call(gate(pool, app), scope(), client)
    assert client.status == 413 and not app.bodies and pool.reserved_bytes == 0


def test_a_refused_body_is_read_and_dropped_before_the_503() -> None:
    pool = Admission(10, queue_limit=0)  # room for nothing of this size
    app = App(pool)
    client = Client([b"x" * 50, b"y" * 50])
    call(gate(pool, app), scope(headers=[length(100)]), client)
    assert client.read == 2  # drained: the client that sends first and reads later sees it
    assert client.status == 503 and not app.bodies
    assert client.headers[b"retry-after"] == b"2"
    assert client.headers[b"connection"] == b"close"
    assert client.json["reason"] == "budget"


def test_a_client_that_expects_100_continue_is_refused_without_being_read() -> None:
    pool = Admission(10, queue_limit=0)
    client = Client([b"x" * 100])
    headers = [length(100), (b"expect", b"100-continue")]
    call(gate(pool, App(pool)), scope(headers=headers), client)
    assert client.status == 503 and client.read == 0


def test_a_content_encoding_is_415() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"\x1f\x8b..."])
    headers = [length(5), (b"content-encoding", b"gzip")]
    call(gate(pool, app), scope(headers=headers), client)
    assert client.status == 415 and not app.bodies


def test_conflicting_lengths_are_400() -> None:
    pool = Admission(10_000)
    client = Client([b"x"])
    call(gate(pool, App(pool)), scope(headers=[length(1), length(2)]), client)
    assert client.status == 400


def test_a_client_gone_mid_body_is_one_line_and_its_reservation_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.memory.gate")
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"{"], then="disconnect")
    call(gate(pool, app), scope(headers=[length(10)]), client)
    assert not client.sent and not app.bodies and pool.reserved_bytes == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert "client disconnected after 1 body bytes" in line


def test_a_stalled_body_gets_408_and_its_reservation_back() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"{"], then="wait")
    call(gate(pool, app, body_timeout=0.05), scope(headers=[length(10)]), client)
    assert client.status == 408 and not app.bodies and pool.reserved_bytes == 0


def test_other_routes_pass_through_untouched() -> None:
    pool = Admission(0)  # would refuse anything it guarded
    app = App(pool)
    client = Client([b"x"])
    call(gate(pool, app), scope(path="/other", headers=[length(1)]), client)
    assert client.status == 201 and pool.admitted == 0


def report_gate(pool: Admission, app: App) -> AdmissionGate:
    """A GET whose reply is built per request declares that reply's size as its cost."""
    routes = [RouteCost("GET", "/reports/{id}/pdf", reply_bytes=4_000)]
    return AdmissionGate(app, pool, routes, LIMIT)


def get(path: str) -> Scope:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


def test_a_declared_reply_is_reserved_for_a_templated_path_and_given_back() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b""])
    asyncio.run(report_gate(pool, app)(get("/reports/42/pdf"), client.receive, client.send))
    assert app.reserved_while_running == [4_000]  # the reply alone: a GET has no body to cost
    assert client.status == 201 and pool.reserved_bytes == 0


def test_a_declared_reply_without_room_is_503_and_the_app_never_runs() -> None:
    pool = Admission(3_000, queue_limit=0)
    app = App(pool)
    client = Client([b""])
    asyncio.run(report_gate(pool, app)(get("/reports/7/pdf"), client.receive, client.send))
    assert client.status == 503 and client.headers[b"retry-after"] == b"2"
    assert app.bodies == []


def test_a_template_matches_one_segment_only() -> None:
    pool = Admission(10_000)
    for path in ("/reports/1/2/pdf", "/reports//pdf", "/reports/1/pdfx"):
        app = App(pool)
        client = Client([b""])
        asyncio.run(report_gate(pool, app)(get(path), client.receive, client.send))
        assert app.reserved_while_running == [0], path  # not guarded: passed straight through


class Holding(Client):
    """A client that notes what the pool holds each time the gate asks it for more body."""

    def __init__(self, pool: Admission, chunks: Sequence[bytes], then: str = "end") -> None:
        super().__init__(chunks, then)
        self.pool = pool
        self.held: list[int] = []

    async def receive(self) -> Message:
        self.held.append(self.pool.reserved_bytes)
        return await super().receive()


def ahead_gate(
    pool: Admission, app: App, lookahead: int = 10, body_timeout: float = 5.0,
    floor: BodyFloor | None = None,
) -> AdmissionGate:
    return AdmissionGate(
        app, pool, [RouteCost("POST", "/bulk", FACTOR)], LIMIT, body_timeout,
        body_floor=floor, lookahead_bytes=lookahead,
    )


def test_a_body_holds_what_has_arrived_plus_the_lookahead_until_it_is_whole() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Holding(pool, [b"x" * 5, b"x" * 20, b"x" * 100, b"x" * 275])
    call(ahead_gate(pool, app), scope(headers=[length(400)]), client)
    # Before each read: the lookahead (5 bytes fit in it), then, each time what came passes
    # what is held, what came plus as much again.
    assert client.held == [10, 10, 50, 250]
    assert app.reserved_while_running == [400 * FACTOR]  # whole: its work's cost
    assert client.status == 201 and pool.reserved_bytes == 0


def test_a_slow_body_declared_large_holds_what_it_sent_not_what_it_declared() -> None:
    pool = Admission(10_000)
    client = Holding(pool, [b"x" * 3], then="wait")
    call(ahead_gate(pool, App(pool), body_timeout=0.05), scope(headers=[length(900)]), client)
    assert client.held == [10, 10]  # not 900 x FACTOR
    assert client.status == 408 and pool.reserved_bytes == 0


def test_slow_bodies_declared_large_leave_room_for_a_fast_one() -> None:
    """The flood's shape: two slow bodies reserving what they declare would fill the pool."""
    pool = Admission(int(2 * LIMIT * FACTOR), queue_limit=0)
    app = App(pool)
    slow = [Client([b"{"], then="wait") for _ in range(20)]
    fast = Client([b"x" * LIMIT])
    g = ahead_gate(pool, app, lookahead=16, body_timeout=0.2)

    async def both() -> None:
        waiting = [asyncio.create_task(g(scope(headers=[length(LIMIT)]), c.receive, c.send))
                   for c in slow]
        await asyncio.sleep(0)  # every slow one has its reservation and waits for its body
        await g(scope(headers=[length(LIMIT)]), fast.receive, fast.send)
        await asyncio.gather(*waiting)

    asyncio.run(both())
    assert fast.status == 201 and app.bodies == [b"x" * LIMIT]
    assert [c.status for c in slow] == [408] * 20
    assert pool.reserved_bytes == 0


def test_a_chunked_body_follows_its_arrival_like_a_declared_one() -> None:
    pool = Admission(10_000)
    app = App(pool)
    client = Holding(pool, [b"x" * 30, b"y" * 30])
    call(ahead_gate(pool, app), scope(), client)
    assert client.held == [10, 60]  # not the limit's 1000 x FACTOR
    assert app.reserved_while_running == [60 * FACTOR]


def test_a_body_below_the_floor_gets_408_saying_so_and_its_reservation_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.memory.gate")
    pool = Admission(10_000)
    app = App(pool)
    client = Client([b"x"], then="wait")
    floor = BodyFloor(min_bytes_per_second=1000, grace_seconds=0.05)
    call(ahead_gate(pool, app, floor=floor), scope(headers=[length(500)]), client)
    assert client.status == 408 and not app.bodies and pool.reserved_bytes == 0
    assert "minimum data rate of 1000 bytes/s" in str(client.json["detail"])
    (line,) = [r.getMessage() for r in caplog.records]
    assert "slower than 1000 B/s over 0.05s (1 bytes); answered 408" in line


def test_a_whole_body_whose_work_finds_no_room_is_503_with_retry_after() -> None:
    pool = Admission(int(LIMIT * FACTOR), queue_limit=0)
    held = asyncio.run(pool.reserve(int(LIMIT * FACTOR) - 50))  # work already running
    app = App(pool)
    client = Client([b"x" * 20])
    call(ahead_gate(pool, app), scope(headers=[length(20)]), client)
    assert client.status == 503 and client.headers[b"retry-after"] == b"2" and not app.bodies
    held.release()
    assert pool.reserved_bytes == 0


def test_a_declared_body_whose_work_can_never_fit_is_refused_unread() -> None:
    pool = Admission(100)
    client = Client([b"x" * 50])
    call(ahead_gate(pool, App(pool)), scope(headers=[length(50)]), client)  # 50 x 4 > 100
    assert client.status == 503 and client.json["reason"] == "budget"
    assert client.read == 1  # drained, as every refusal is


def test_a_body_refused_room_to_grow_is_dropped_as_it_comes_then_503() -> None:
    pool = Admission(100, queue_limit=0)
    held = asyncio.run(pool.reserve(85))  # room for the lookahead, not for the body's growth
    app = App(pool)
    client = Client([b"x" * 10, b"x" * 10, b"x" * 5])
    call(ahead_gate(pool, app, lookahead=10), scope(headers=[length(25)]), client)
    assert client.read == 3  # refused at the second chunk; the rest read and dropped
    assert client.json["reason"] == "budget"
    assert client.status == 503 and client.headers[b"retry-after"] == b"2" and not app.bodies
    held.release()
    assert pool.reserved_bytes == 0
