"""The client side of an overload run: many clients sending large bodies in a loop (the heavy
requests the workload declares, app/load.py), and a /healthz probe beside them, on raw asyncio
sockets so every byte on the wire is under control.

Each client behaves as most HTTP clients do: it sends its whole request, body included, and only
then reads the reply; a fresh connection per request. A body is sent with Content-Length or
chunked. What is counted: every status, every connection error (reset, refused, closed without
a reply, timed out), the latency of accepted requests, and /healthz answers and failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.load import HeavyRequest

CHUNK = 64 * 1024
REPLY_CAP = 1024 * 1024  # read at most this much of a reply body


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class FloodResult:
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted_latencies: list[float] = field(default_factory=list)
    retry_after_missing: int = 0  # 503s without Retry-After

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def error_share(self) -> float:
        return sum(self.errors.values()) / self.requests if self.requests else 0.0

    @property
    def goodput(self) -> float:
        """Accepted (2xx) requests per second."""
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return ok / self.seconds if self.seconds else 0.0


@dataclass
class HealthResult:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


def request_head(
    path: str,
    host: str,
    length: int | None,
    extra: Sequence[str] = (),
    method: str = "POST",
    content_type: str = "application/json",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines.append(framing)
    lines += [*extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed without a reply")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(min(length, REPLY_CAP)) if length else b""
    return Reply(status, headers, body)


async def post(
    host: str,
    port: int,
    path: str,
    body: bytes,
    chunked: bool = False,
    timeout: float = 60.0,
    method: str = "POST",
    content_type: str = "application/json",
) -> Reply:
    """One request with a body (a POST unless ``method`` says otherwise), sent whole before the
    reply is read."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            length = None if chunked else len(body)
            writer.write(request_head(path, host, length, (), method, content_type))
            if chunked:
                for start in range(0, len(body), CHUNK):
                    piece = body[start : start + CHUNK]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                for start in range(0, len(body), CHUNK):
                    writer.write(body[start : start + CHUNK])
                    await writer.drain()
            await writer.drain()
            return await read_reply(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return type(exc).__name__


async def flood(
    host: str,
    port: int,
    sends: Sequence[tuple[HeavyRequest, bytes]],
    clients: int,
    seconds: float,
    chunked: bool = False,
    honour_retry_after: bool = False,
) -> FloodResult:
    """``clients`` loops sending until ``seconds`` have passed; client i sends request i modulo
    the requests given, with its body (the reference workload's sync and async routes side by
    side). A refused client tries again after 50 ms, as a hostile one would, or after the
    reply's Retry-After."""
    result = FloodResult()
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        request, body = sends[index % len(sends)]
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                reply = await post(
                    host, port, request.path, body, chunked,
                    method=request.method, content_type=request.content_type,
                )  # fmt: skip
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors[_error_name(exc)] += 1
                await asyncio.sleep(0.05)
                continue
            result.statuses[reply.status] += 1
            if 200 <= reply.status < 300:
                result.accepted_latencies.append(time.monotonic() - started)
            elif reply.status == 503:
                wait = reply.headers.get("retry-after", "")
                if not wait.isdigit():
                    result.retry_after_missing += 1
                pause = float(wait) if honour_retry_after and wait.isdigit() else 0.05
                await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0)))

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result.seconds = time.monotonic() - started
    return result


async def probe_health(
    host: str, port: int, stop: asyncio.Event, every: float = 0.1, timeout: float = 5.0
) -> HealthResult:
    """GET /healthz on a fresh connection every ``every`` seconds until ``stop`` is set."""
    result = HealthResult()
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                reply = await read_reply(reader)
                writer.close()
            if reply.status == 200:
                result.latencies.append(time.monotonic() - started)
            else:
                result.failures += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            result.failures += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(every - (time.monotonic() - started), 0))
    return result
