"""The bulk spike: ``posts`` bulk submissions of ``records`` records, ``at_once`` in flight,
half to /bulk/sync and half to /bulk/async; how long serving all of them takes.

Bodies are the load scenario's (app/workload/load/payloads.py), built before the server
starts; each post is sent whole on a fresh connection before its reply is read (flood.py's
`post`). A 503 is the
admission gate asking to wait: the post waits out Retry-After and is sent again, and its latency
runs from its first send to its accepted reply, as its client would see it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from app.workload.load.payloads import VARIANTS, body
from scripts.verify.overload.flood import FloodResult, post

PATHS = ("/bulk/sync", "/bulk/async")
REFUSED = 503
RETRY_FALLBACK_SECONDS = 1.0


def bodies(records: int) -> list[bytes]:
    """Every variant of the body, built now, so no post waits on encoding."""
    return [body(records, variant) for variant in range(VARIANTS)]


def retry_after(headers: dict[str, str]) -> float:
    wait = headers.get("retry-after", "")
    return float(wait) if wait.isdigit() else RETRY_FALLBACK_SECONDS


async def bulk(
    host: str,
    port: int,
    posts: int,
    records: int,
    at_once: int,
    paths: Sequence[str] = PATHS,
    prepared: Sequence[bytes] | None = None,
) -> FloodResult:
    """Replies by status (503s included, each followed by a retry), connection errors by name,
    and each accepted post's latency; the posts go to ``paths`` in turn, with ``prepared``
    bodies where the caller built them before the load."""
    result = FloodResult()
    prepared = prepared or bodies(records)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(posts):
        queue.put_nowait(index)

    async def one(index: int) -> None:
        first = time.monotonic()
        payload = prepared[index % len(prepared)]
        while True:
            try:
                reply = await post(host, port, paths[index % len(paths)], payload)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                return
            result.statuses[reply.status] += 1
            if reply.status != REFUSED:
                break
            await asyncio.sleep(retry_after(reply.headers))
        if 200 <= reply.status < 300:
            result.accepted_latencies.append(time.monotonic() - first)

    async def sender() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    started = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(at_once)))
    result.seconds = time.monotonic() - started
    return result
