"""The send guard: large replies in slices, each awaited; their windows reserved from a pool."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.memory.admission import Admission
from app.memory.outbound import (
    MIN_SLICE_BYTES,
    Outbound,
    ReplyFloor,
    ReplySlicer,
    StoredResponse,
    Window,
)

SLICE = 1024


def scope(path: str = "/r", method: str = "GET") -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def replying(body: bytes, more_after: list[bytes] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": bool(more_after)})
        for i, chunk in enumerate(more_after or []):
            last = i == len(more_after or []) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})

    return app


class Recorder:
    """A server's send: records messages, and can hold each body message until released, as a
    server's flow control does for a client that does not read."""

    def __init__(self, hold: bool = False) -> None:
        self.messages: list[Message] = []
        self.hold = hold
        self.gate = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        if self.hold and message["type"] == "http.response.body":
            await self.gate.wait()
            self.gate.clear()

    @property
    def body(self) -> bytes:
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        return b"".join(m.get("body", b"") for m in bodies)


def test_a_large_body_goes_out_in_slices_whole_and_in_order() -> None:
    body = bytes(range(256)) * 20  # 5120 bytes: 5 slices
    outbound = Outbound(SLICE)
    sent = Recorder()
    asyncio.run(ReplySlicer(replying(body), outbound)(scope(), no_body, sent))
    parts = [m for m in sent.messages if m["type"] == "http.response.body"]
    # The window is at full size from the start here (its smallest slice is the full one): one
    # probe (an empty part) after the first slice shows the server took it and stayed under its
    # mark, and the other slices go back to back.
    assert [len(m["body"]) for m in parts] == [SLICE, 0] + [SLICE] * 4
    bodies = [m for m in parts if m["body"]]
    assert [m["more_body"] for m in bodies] == [True] * 4 + [False]
    assert sent.body == body
    assert (outbound.responses, outbound.queued_bytes, outbound.sliced) == (0, 0, 1)


def test_a_small_body_passes_as_it_came() -> None:
    sent = Recorder()
    asyncio.run(ReplySlicer(replying(b"ok"), Outbound(SLICE))(scope(), no_body, sent))
    assert [m["type"] for m in sent.messages] == ["http.response.start", "http.response.body"]
    assert sent.body == b"ok"


def test_a_streamed_reply_is_sliced_message_by_message() -> None:
    sent = Recorder()
    app = replying(b"a" * 1500, more_after=[b"b" * 10, b"c" * 2048])
    asyncio.run(ReplySlicer(app, Outbound(SLICE))(scope(), no_body, sent))
    sizes = [len(m["body"]) for m in sent.messages if m["type"] == "http.response.body"]
    assert [size for size in sizes if size] == [1024, 476, 10, 1024, 1024]
    assert sent.body == b"a" * 1500 + b"b" * 10 + b"c" * 2048
    assert sent.messages[-1]["more_body"] is False


def test_a_slow_reader_holds_one_window_and_the_count_goes_back_to_zero() -> None:
    async def run() -> tuple[tuple[int, int], tuple[int, int]]:
        outbound = Outbound(SLICE)
        sent = Recorder(hold=True)
        task = asyncio.create_task(
            ReplySlicer(replying(b"x" * 10 * SLICE), outbound)(scope(), no_body, sent)
        )
        await asyncio.sleep(0.01)
        while_held = (outbound.responses, outbound.queued_bytes)
        while not task.done():
            sent.gate.set()
            await asyncio.sleep(0)
        return while_held, (outbound.responses, outbound.queued_bytes)

    while_held, after = asyncio.run(run())
    assert while_held == (1, SLICE)  # the slice waiting for the server, not the 10 KiB reply
    assert after == (0, 0)


def test_without_room_a_large_reply_is_503_with_retry_after_and_nothing_of_it_is_sent() -> None:
    async def run() -> tuple[Recorder, Recorder, Outbound]:
        pool = Admission(2 * SLICE, queue_limit=0, max_wait_seconds=0.1)
        outbound = Outbound(SLICE, pool)
        first, second = Recorder(hold=True), Recorder()
        guard = ReplySlicer(replying(b"x" * 4 * SLICE), outbound)
        task = asyncio.create_task(guard(scope(), no_body, first))
        await asyncio.sleep(0.01)  # the first reply holds the whole pool
        await guard(scope(), no_body, second)
        while not task.done():
            first.gate.set()
            await asyncio.sleep(0)
        return first, second, outbound

    first, second, outbound = asyncio.run(run())
    assert first.body == b"x" * 4 * SLICE
    start = second.messages[0]
    assert start["status"] == 503
    assert (b"retry-after", b"2") in start["headers"]
    assert json.loads(second.body)["reason"] == "outbound_budget"
    assert b"x" not in second.body
    assert outbound.refused == 1
    assert outbound.pool is not None and outbound.pool.reserved_bytes == 0


def test_quiet_paths_are_never_refused() -> None:
    pool = Admission(1, queue_limit=0)  # room for nothing
    sent = Recorder()
    outbound = Outbound(SLICE, pool)
    guard = ReplySlicer(replying(b"m" * 3 * SLICE), outbound, quiet_paths={"/metrics"})
    asyncio.run(guard(scope("/metrics"), no_body, sent))
    assert sent.messages[0]["status"] == 200
    assert sent.body == b"m" * 3 * SLICE


def test_an_app_that_raises_gives_its_reservation_back() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"y" * 3 * SLICE, "more_body": True})
        raise RuntimeError("boom")

    pool = Admission(10 * SLICE)
    outbound = Outbound(SLICE, pool)
    with pytest.raises(RuntimeError):
        asyncio.run(ReplySlicer(app, outbound)(scope(), no_body, Recorder()))
    assert (pool.reserved_bytes, outbound.responses, outbound.queued_bytes) == (0, 0, 0)


def test_a_stored_value_is_read_a_slice_at_a_time() -> None:
    value = bytes(range(256)) * 10
    reads: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return value[offset : offset + size]

    sent = Recorder()
    response = StoredResponse(read, len(value), "application/json", slice_bytes=1000)
    asyncio.run(response(scope(), no_body, sent))
    assert sent.body == value
    assert reads == [(0, 1000), (1000, 1000), (2000, 1000)]
    headers = dict(sent.messages[0]["headers"])
    assert headers[b"content-length"] == str(len(value)).encode()


def test_a_stored_value_gone_midway_cuts_the_reply_short() -> None:
    value = b"z" * 3000

    def read(offset: int, size: int) -> bytes | None:
        return value[offset : offset + size] if offset < 1000 else None

    sent = Recorder()
    asyncio.run(StoredResponse(read, len(value), "application/json", 1000)(scope(), no_body, sent))
    assert sent.body == b"z" * 1000
    assert sent.messages[-1]["more_body"] is True  # never a complete-looking short reply


def test_head_of_a_stored_value_reads_nothing() -> None:
    def read(offset: int, size: int) -> bytes:
        raise AssertionError("HEAD must not read the value")

    sent = Recorder()
    asyncio.run(StoredResponse(read, 5000, "application/json")(scope(method="HEAD"), no_body, sent))
    assert sent.body == b""


def test_a_stored_value_stops_being_read_once_the_client_is_gone() -> None:
    """A server drops the sends of a client that left; without watching for the disconnect,
    every slice would still be read for nobody."""
    reads: list[int] = []

    def read(offset: int, size: int) -> bytes:
        reads.append(offset)
        return b"v" * size

    async def run() -> None:
        left = asyncio.Event()
        first = True

        async def receive() -> Message:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and len(reads) == 2:
                left.set()  # the client goes after the second slice
            await asyncio.sleep(0.001)  # a server's write: the watcher gets its turn

        await StoredResponse(read, 1000 * 100, "application/json", slice_bytes=100)(
            scope(), receive, send
        )

    asyncio.run(run())
    assert 2 <= len(reads) <= 4  # not the 1,000 slices of the whole value


class Reader:
    """A server's send for a client reading at a chosen pace, on a fake clock: each body part
    (a slice or a probe) takes ``seconds_per_part`` of it, as flow control makes a send wait."""

    def __init__(self, seconds_per_part: list[float] | float) -> None:
        self.now = 0.0
        self.paces = seconds_per_part
        self.parts: list[int] = []

    def clock(self) -> float:
        return self.now

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            paces = self.paces
            pace = paces[min(len(self.parts), len(paces) - 1)] if isinstance(paces, list) else paces
            self.now += pace
            self.parts.append(len(message.get("body", b"")))


def read_sizes(reader: Reader, length: int) -> list[int]:
    """The sizes a stored value of ``length`` bytes was read in, under the reply slicer."""
    sizes: list[int] = []

    def read(offset: int, size: int) -> bytes:
        sizes.append(size)
        return b"r" * min(size, length - offset)

    outbound = Outbound(clock=reader.clock)
    app = StoredResponse(read, length, "application/json")
    asyncio.run(ReplySlicer(app, outbound)(scope(), no_body, reader))
    return sizes


def test_the_window_grows_to_full_slices_for_a_reader_that_keeps_up() -> None:
    reader = Reader(0.0)
    sizes = read_sizes(reader, 1024 * 1024)
    k = 1024
    assert sizes[:6] == [4 * k, 8 * k, 16 * k, 32 * k, 64 * k, 64 * k]
    assert set(sizes[4:]) == {64 * k}
    # A probe before the 8, 16, 32 and the first 64 KiB slice, while the window grows, and one
    # after that first full slice; then none.
    assert [size for size in reader.parts if size][:4] == sizes[:4]
    assert reader.parts[:10] == [4 * k, 0, 8 * k, 0, 16 * k, 0, 32 * k, 0, 64 * k, 0]
    assert reader.parts.count(0) == 5


def test_the_window_stays_small_for_a_slow_reader_and_no_slice_waits_with_the_server() -> None:
    reader = Reader(2.0)  # every part waits: the client is behind
    sizes = read_sizes(reader, 256 * 1024)
    assert set(sizes) == {MIN_SLICE_BYTES}
    slices = [size for size in reader.parts if size]
    probes = [size for size in reader.parts if not size]
    # A slice read only after its probe came back: never one read while the server is behind.
    assert len(probes) == len(slices) - 1 == len(sizes) - 1


def test_one_wait_sets_the_window_back_and_it_grows_again() -> None:
    k = 1024
    # Taken at once, except the fourth part (the probe after the second slice): 5 s.
    sizes = read_sizes(Reader([0.0, 0.0, 0.0, 5.0, 0.0]), 1024 * 1024)
    assert sizes[:5] == [4 * k, 8 * k, 4 * k, 8 * k, 16 * k]


def test_a_reader_that_falls_behind_as_the_window_fills_is_read_no_full_slice_for() -> None:
    """Kernel buffers take the growing slices at once, then the transport is over its mark: the
    probe after the first full slice waits, and the next read is a small slice, not a full one
    that would wait in the reply's hand."""
    k = 1024
    # Parts: 4 K, probe, 8 K, probe, 16 K, probe, 32 K, probe, 64 K taken at once; the probe
    # after the 64 K waits 5 s; the rest at once.
    sizes = read_sizes(Reader([0.0] * 9 + [5.0, 0.0]), 1024 * 1024)
    assert sizes[:6] == [4 * k, 8 * k, 16 * k, 32 * k, 64 * k, 4 * k]


def test_the_window_never_counts_more_than_two_full_slices_ahead() -> None:
    window = Window(max_bytes=8, min_bytes=2)
    for _ in range(10):
        window.taken(8, 0.0, window.ahead_bytes)
    assert (window.size, window.ahead_bytes) == (8, 16)
    window.taken(2, 9.0, window.ahead_bytes)  # waited: what is ahead now is this send alone
    assert (window.size, window.ahead_bytes, window.waits) == (2, 2, 1)


def test_a_reply_not_taken_in_its_time_at_the_floor_ends_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stuck(message: Message) -> None:
        if message["type"] == "http.response.body" and not message["body"]:
            await asyncio.Event().wait()  # a probe the server never takes: the client reads nothing

    reads: list[int] = []

    def read(offset: int, size: int) -> bytes:
        reads.append(offset)
        return b"s" * size

    floor = ReplyFloor(min_bytes_per_second=1e9, grace_seconds=0.05)
    outbound = Outbound(floor=floor)
    app = StoredResponse(read, 1024 * 1024, "application/json")
    caplog.set_level("INFO", logger="app.memory.outbound")
    asyncio.run(ReplySlicer(app, outbound)(scope(), no_body, stuck))  # returns: the reply ended
    assert reads == [0]  # the first slice; the second never read
    assert (outbound.cut_slow, outbound.responses, outbound.queued_bytes) == (1, 0, 0)
    [line] = [r for r in caplog.records if "reply cut" in r.getMessage()]
    assert "GET /r" in line.getMessage() and line.exc_info is None


def test_without_a_floor_a_slow_send_is_only_waited_for() -> None:
    async def run() -> Recorder:
        sent = Recorder(hold=True)
        task = asyncio.create_task(
            ReplySlicer(replying(b"w" * 3 * SLICE), Outbound(SLICE, floor=ReplyFloor(0.0)))(
                scope(), no_body, sent
            )
        )
        while not task.done():
            await asyncio.sleep(0.01)
            sent.gate.set()
        return sent

    assert asyncio.run(run()).body == b"w" * 3 * SLICE


def test_a_stored_value_of_one_slice_goes_whole_and_reserves_nothing() -> None:
    pool = Admission(1, queue_limit=0)  # room for no large reply
    reader = Reader(0.0)
    sizes: list[int] = []

    def read(offset: int, size: int) -> bytes:
        sizes.append(size)
        return b"o" * min(size, 6000 - offset)

    outbound = Outbound(pool=pool, clock=reader.clock)
    asyncio.run(
        ReplySlicer(StoredResponse(read, 6000, "text/plain"), outbound)(scope(), no_body, reader)
    )
    assert reader.parts == [6000]
    assert (outbound.sliced, outbound.refused) == (0, 0)


class Closing(Recorder):
    """A server's send that fails once the connection is gone, as uvloop's transport does for a
    reply to an earlier, pipelined request under uvicorn's httptools protocol."""

    def __init__(self, error: Exception, after: int) -> None:
        super().__init__()
        self.error = error
        self.after = after

    async def __call__(self, message: Message) -> None:
        if len(self.messages) >= self.after:
            raise self.error
        await super().__call__(message)


CLOSED = RuntimeError(
    "unable to perform operation on <TCPTransport closed=True reading=False>; the handler is closed"
)


@pytest.mark.parametrize("error", [CLOSED, ConnectionResetError(104, "reset by peer")])
def test_a_reply_whose_connection_closed_stops_with_one_line_and_no_traceback(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="app.memory.outbound")
    pool = Admission(10 * SLICE)
    outbound = Outbound(SLICE, pool)
    server = Closing(error, after=3)
    asyncio.run(ReplySlicer(replying(b"z" * 8 * SLICE), outbound)(scope(), no_body, server))
    [line] = [r for r in caplog.records if "client gone" in r.getMessage()]
    assert line.exc_info is None and line.levelname == "INFO"
    assert (pool.reserved_bytes, outbound.queued_bytes) == (0, 0)


def test_a_protocol_error_of_the_app_still_surfaces() -> None:
    server = Closing(RuntimeError("Unexpected ASGI message 'http.response.body' sent"), after=2)
    with pytest.raises(RuntimeError, match="Unexpected ASGI message"):
        asyncio.run(
            ReplySlicer(replying(b"z" * 8 * SLICE), Outbound(SLICE))(scope(), no_body, server)
        )
