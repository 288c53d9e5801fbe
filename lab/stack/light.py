"""Light requests, where HTTP parsing is a large share of the work: ``connections`` keep-alive
connections, each sending `GET /healthz` and `GET /products/{sku}` in turn, one at a time, for
``seconds``.

Raw asyncio sockets and flood.py's reply reader, so the client is the same for every stack and
as cheap as it can be made: it shares the machine with the server, and the CPU it takes is the
server's loss, whichever stack runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from app.workload.load.payloads import KNOWN_SKUS
from scripts.verify.overload.flood import FloodResult, read_reply

REPLY_TIMEOUT = 10.0


def request(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def path_of(turn: int, rng: random.Random) -> str:
    """Even turns /healthz, odd turns a known product (seeded SKU-00000..SKU-04999)."""
    return "/healthz" if turn % 2 == 0 else f"/products/SKU-{rng.randrange(KNOWN_SKUS):05d}"


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def light(host: str, port: int, connections: int, seconds: float) -> FloodResult:
    """Replies by status, connection errors by name, and the latency of every 2xx reply."""
    result = FloodResult()
    deadline = time.monotonic() + seconds

    async def connection(index: int) -> None:
        rng = random.Random(index)
        reader, writer = None, None
        turn = index
        while time.monotonic() < deadline:
            turn += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                started = time.monotonic()
                writer.write(request(path_of(turn, rng), host))
                async with asyncio.timeout(REPLY_TIMEOUT):
                    reply = await read_reply(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                await _close(writer)
                reader, writer = None, None
                continue
            result.statuses[reply.status] += 1
            if 200 <= reply.status < 300:
                result.accepted_latencies.append(time.monotonic() - started)
            if reply.headers.get("connection", "").lower() == "close":
                await _close(writer)
                reader, writer = None, None
        await _close(writer)

    started = time.monotonic()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    result.seconds = time.monotonic() - started
    return result
