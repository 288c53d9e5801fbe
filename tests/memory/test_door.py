"""The door: at most so many requests worked on at once, until their reply starts or their body
is read; the rest wait outside, first come first served, and get 503 after their longest wait."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.memory.door import Door, DoorMiddleware


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A test written as a coroutine, run in a loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def scope(path: str = "/r", kind: str = "http") -> Scope:
    return {"type": kind, "method": "GET", "path": path, "headers": []}


class Server:
    """One request's server side: what the app sent, and a body that arrives when released."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.body_arrives = asyncio.Event()

    async def receive(self) -> Message:
        await self.body_arrives.wait()
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


class Worker:
    """An app whose requests work until told to reply; it records the order they entered in."""

    def __init__(self, read_body: bool = False) -> None:
        self.entered: list[str] = []
        self.reply = asyncio.Event()
        self.read_body = read_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered.append(scope["path"])
        if self.read_body:
            await receive()
        await self.reply.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@in_loop
async def test_no_more_than_the_limit_work_at_once_and_the_rest_enter_in_order() -> None:
    app = Worker()
    door = Door(limit=2)
    middleware = DoorMiddleware(app, door)
    servers = [Server() for _ in range(4)]
    tasks = [
        asyncio.create_task(middleware(scope(f"/r{i}"), s.receive, s.send))
        for i, s in enumerate(servers)
    ]
    await settle()
    assert app.entered == ["/r0", "/r1"]
    assert (door.working, door.waiting) == (2, 2)
    app.reply.set()
    await asyncio.gather(*tasks)
    assert app.entered == ["/r0", "/r1", "/r2", "/r3"]
    assert [s.status for s in servers] == [200] * 4
    assert (door.working, door.waiting, door.refused) == (0, 0, 0)


@in_loop
async def test_a_started_reply_gives_up_its_place() -> None:
    """A slow reader holds its reply (bounded by the outbound window), never the door."""
    started = asyncio.Event()
    held = asyncio.Event()

    async def slow_reply(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await held.wait()  # the client reads slowly: the reply is not over
        await send({"type": "http.response.body", "body": b"done"})

    door = Door(limit=1)
    first = asyncio.create_task(DoorMiddleware(slow_reply, door)(scope(), Server().receive,
                                                                   Server().send))
    await started.wait()
    assert door.working == 0
    other = Worker()
    other.reply.set()
    server = Server()
    await DoorMiddleware(other, door)(scope("/other"), server.receive, server.send)
    assert server.status == 200
    held.set()
    await first


@in_loop
async def test_reading_the_body_gives_up_the_place() -> None:
    """A slow sender waits on its own body outside the door's count."""
    app = Worker(read_body=True)
    door = Door(limit=1, max_wait_seconds=5)
    middleware = DoorMiddleware(app, door)
    slow, fast = Server(), Server()
    slow_task = asyncio.create_task(middleware(scope("/slow"), slow.receive, slow.send))
    await settle()
    assert door.working == 0  # waiting on its body
    fast.body_arrives.set()
    app.reply.set()
    fast_task = asyncio.create_task(middleware(scope("/fast"), fast.receive, fast.send))
    await fast_task
    assert fast.status == 200
    assert not slow_task.done()
    slow.body_arrives.set()
    await slow_task
    assert door.working == 0


@in_loop
async def test_a_request_that_waits_its_longest_gets_503_with_retry_after() -> None:
    app = Worker()
    door = Door(limit=1, max_wait_seconds=0.05)
    middleware = DoorMiddleware(app, door, retry_after_seconds=3)
    inside = asyncio.create_task(middleware(scope("/in"), Server().receive, Server().send))
    await settle()
    server = Server()
    await middleware(scope("/out"), server.receive, server.send)
    assert app.entered == ["/in"]
    assert server.status == 503
    start, body = server.messages
    assert (b"retry-after", b"3") in start["headers"]
    assert json.loads(body["body"])["reason"] == "door_full"
    assert (door.refused, door.waiting, door.working) == (1, 0, 1)
    app.reply.set()
    await inside
    assert door.working == 0


@in_loop
async def test_quiet_paths_and_other_scopes_go_straight_in_while_it_is_full() -> None:
    app = Worker()
    door = Door(limit=1, max_wait_seconds=0.01)
    middleware = DoorMiddleware(app, door, quiet_paths={"/healthz"})
    inside = asyncio.create_task(middleware(scope("/busy"), Server().receive, Server().send))
    await settle()
    app.reply.set()
    health, socket = Server(), Server()
    await middleware(scope("/healthz"), health.receive, health.send)
    await middleware(scope("/ws", kind="websocket"), socket.receive, socket.send)
    assert health.status == 200 and socket.status == 200
    await inside
    assert door.refused == 0


@in_loop
async def test_an_app_that_raises_gives_its_place_back() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    door = Door(limit=1)
    with pytest.raises(RuntimeError):
        await DoorMiddleware(broken, door)(scope(), Server().receive, Server().send)
    assert door.working == 0
    app = Worker()
    app.reply.set()
    server = Server()
    await DoorMiddleware(app, door)(scope(), server.receive, server.send)
    assert server.status == 200


@pytest.mark.parametrize(("limit", "wait"), [(0, 1.0), (-1, 1.0), (1, -0.5)])
def test_bad_settings_are_refused(limit: int, wait: float) -> None:
    with pytest.raises(ValueError):
        Door(limit, wait)
