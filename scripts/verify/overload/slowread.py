"""Slow readers: clients that ask for a large stored result and read the reply a few bytes a
second, as a phone on a bad link does, or `slowhttptest -X` on purpose.

Each reader opens its connection with a small receive buffer, sends its GET (or several,
pipelined), then takes ``read_bytes`` every ``every`` seconds. They run in one thread of their
own, on plain non-blocking sockets: a reader does nothing but wait, so thousands fit in one
thread, and none of them shares the /healthz probe's process (the probe runs in a child
process: a client busy with 300 sockets must not be what the probe measures).

What is stored and read is what the workload declares (app/load.py): its first heavy request
whose result can be read back, at that request's ``result_path``.

One run stores ``results`` large results, reads the cgroup's usage, lets the readers hang on for
``seconds`` while the working set is sampled, and then checks what a user would: no OOM kill, the
server alive, /healthz answering, and a normal client reading a result whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from app.load import HeavyRequest
from app.memory.measure import MB
from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.declared import readable
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.flood import HealthResult, probe_health
from scripts.verify.overload.run import CgroupPeaks, limited_server

HOST = "127.0.0.1"
RECEIVE_BUFFER = 4096  # SO_RCVBUF asked for; the kernel keeps a small floor of its own


@dataclass(frozen=True)
class SlowReadSettings:
    readers: int = 300
    seconds: float = 30.0
    results: int = 4
    records: int = 20_000
    pipelined: int = 1  # GETs sent at once on each connection
    read_bytes: int = 5
    every: float = 1.0
    limit_mb: float = 500.0
    web_concurrency: int = 1
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class ReaderCounts:
    opened: int = 0
    refused: int = 0  # could not connect
    ended: int = 0  # seen closed or reset (a slow reader sees it only once its buffer is read)
    bytes_read: int = 0


@dataclass
class SlowReadRun:
    profile: str
    settings: SlowReadSettings
    readers: ReaderCounts
    cut_slow: int | None  # connections the server closed below the reply rate floor
    health: HealthResult
    reply_bytes: int
    start_usage_bytes: int
    peak_usage_bytes: int
    peak_working_set_bytes: int
    kernel_queued_bytes: int | None  # the most reply bytes the kernel's send queues held at once
    oom_kills: int | None  # None where the kernel does not count them
    alive: bool
    whole_read_after: bool
    server_log: Path
    fast_read_seconds: float | None = None  # one normal client reading a result whole, before

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_usage_bytes - self.start_usage_bytes)

    @property
    def per_reader_bytes(self) -> float:
        return self.growth_bytes / self.settings.readers

    @property
    def health_share(self) -> float:
        probes = len(self.health.latencies) + self.health.failures
        return len(self.health.latencies) / probes if probes else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "readers": self.settings.readers,
            "pipelined": self.settings.pipelined,
            "seconds": self.settings.seconds,
            "reply_mb": round(self.reply_bytes / MB, 2),
            "opened": self.readers.opened,
            "refused": self.readers.refused,
            "cut_slow": self.cut_slow,
            "start_usage_mb": round(self.start_usage_bytes / MB, 1),
            "peak_usage_mb": round(self.peak_usage_bytes / MB, 1),
            "peak_working_set_mb": round(self.peak_working_set_bytes / MB, 1),
            "growth_mb": round(self.growth_bytes / MB, 2),
            "per_reader_kb": round(self.per_reader_bytes / 1024, 2),
            "kernel_per_reader_kb": None
            if self.kernel_queued_bytes is None
            else round(self.kernel_queued_bytes / self.settings.readers / 1024, 2),
            "oom_kills": self.oom_kills,
            "alive": self.alive,
            "health_share": round(self.health_share, 4),
            "whole_read_after": self.whole_read_after,
            "fast_read_s": None
            if self.fast_read_seconds is None
            else round(self.fast_read_seconds, 4),
        }


class SlowReaders(threading.Thread):
    """``count`` connections reading ``paths`` (round robin) slowly until ``stop`` is set."""

    def __init__(
        self, port: int, paths: Sequence[str], count: int, settings: SlowReadSettings
    ) -> None:
        super().__init__(name="slow-readers", daemon=True)
        self.port = port
        self.paths = list(paths)
        self.count = count
        self.settings = settings
        self.stop = threading.Event()
        self.counts = ReaderCounts()
        self.opened = threading.Event()

    def _open(self, path: str) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # before connect
        sock.settimeout(5.0)
        try:
            sock.connect((HOST, self.port))
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
            sock.sendall(request * self.settings.pipelined)
        except OSError:
            sock.close()
            self.counts.refused += 1
            return None
        sock.setblocking(False)
        self.counts.opened += 1
        return sock

    def run(self) -> None:
        sockets = [self._open(self.paths[i % len(self.paths)]) for i in range(self.count)]
        live = [s for s in sockets if s is not None]
        self.opened.set()
        while live and not self.stop.wait(self.settings.every):
            for sock in list(live):
                try:
                    data = sock.recv(self.settings.read_bytes)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # closed or reset by the server
                    self.counts.ended += 1
                    live.remove(sock)
                    sock.close()
                    continue
                self.counts.bytes_read += len(data)
        for sock in live:
            sock.close()


def _probe_process(port: int, seconds: float, results: multiprocessing.Queue[HealthResult]) -> None:
    async def probe() -> HealthResult:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await probe_health(HOST, port, stop)

    results.put(asyncio.run(probe()))


class HealthProbe:
    """/healthz every 100 ms for ``seconds``, from a process of its own."""

    def __init__(self, port: int, seconds: float) -> None:
        # fork, before any thread of this run starts: spawn would run the caller's unguarded
        # __main__ (the verifier's CLI) again in the child.
        context = multiprocessing.get_context("fork")
        self._results: multiprocessing.Queue[HealthResult] = context.Queue()
        self._process = context.Process(
            target=_probe_process, args=(port, seconds, self._results), daemon=True
        )
        self.seconds = seconds

    def start(self) -> None:
        self._process.start()

    def result(self) -> HealthResult:
        try:
            found = self._results.get(timeout=self.seconds + 30)
        except queue.Empty:
            found = HealthResult(failures=1)
        self._process.join(5)
        return found


def store_results(
    base_url: str, body: bytes, count: int, request: HeavyRequest | None = None
) -> list[str]:
    """Send ``count`` bodies as ``request`` (default: the declared one whose result is read
    back) and return the stored results' ids; RunNotMade if one is refused."""
    request = request or readable()
    ids = []
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        for _ in range(count):
            for _attempt in range(20):
                reply = client.request(
                    request.method, request.path, content=body,
                    headers={"content-type": request.content_type},
                )  # fmt: skip
                if reply.status_code != 503:
                    break
                time.sleep(float(reply.headers.get("retry-after", "1")))
            if reply.status_code != 201:
                raise RunNotMade(f"storing a result got {reply.status_code}: {reply.text[:200]}")
            ids.append(reply.json()["id"])
    return ids


def read_whole(
    base_url: str, ids: Sequence[str], tries: int = 8, request: HeavyRequest | None = None
) -> tuple[bool, int]:
    """A normal client reads each result whole: (all whole, the largest reply's size). A 404 is
    tried again on a new connection: with several workers a result lives in the one that made it."""
    request = request or readable()
    largest = 0
    try:
        for result_id in ids:
            for _ in range(tries):
                with httpx.Client(base_url=base_url, timeout=60.0) as client:
                    reply = client.get(request.result_of(result_id))
                if reply.status_code != 404:
                    break
            if reply.status_code != 200:
                return False, largest
            json.loads(reply.content)
            largest = max(largest, len(reply.content))
    except (httpx.HTTPError, ValueError):
        return False, largest
    return True, largest


def time_whole_read(base_url: str, result_id: str, times: int = 3) -> float | None:
    """Seconds a normal client takes to read one result whole on a connection of its own, the
    median of ``times`` reads; None if one fails. A figure to compare within one machine's runs
    (A B A B), not a judged one."""
    path = readable().result_of(result_id)
    took = []
    for _ in range(times):
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            started = time.perf_counter()
            try:
                reply = client.get(path)
            except httpx.HTTPError:
                return None
            took.append(time.perf_counter() - started)
        if reply.status_code != 200:
            return None
    return sorted(took)[len(took) // 2]


def kernel_queued(port: int) -> int | None:
    """Send-Q summed over the server's established connections on ``port`` (`ss`, iproute2): the
    reply bytes the kernel holds for clients. cgroup v2 charges them to the container (``sock``
    in memory.stat); v1, as on this machine, does not, so the cgroup's growth leaves them out.
    None where `ss` cannot be run."""
    try:
        listed = subprocess.run(
            ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # With a state filter, ss leaves the state column out: Recv-Q Send-Q Local Peer.
    return sum(int(line.split()[1]) for line in listed.splitlines() if line.strip())


def closed_slow(base_url: str) -> int | None:
    """edge_connections_closed_total{reason="slow_read"} from /metrics; None where there is none
    (a service without the edge's limits)."""
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10.0).text
    except httpx.HTTPError:
        return None
    pattern = r'^edge_connections_closed_total\{reason="slow_read"\} ([0-9.e+]+)$'
    found = re.search(pattern, text, re.M)
    return int(float(found.group(1))) if found else None


def _usage(cgroup: MemoryCgroup) -> int:
    reading = cgroup.read()
    return reading.usage_bytes or 0 if reading is not None else 0


def run_slow_readers(
    profile: str,
    settings: SlowReadSettings,
    body: bytes,
    out: Path | None = None,
    paths: Sequence[str] | None = None,
) -> SlowReadRun:
    """One run; RunNotMade when the service cannot be started or no cgroup can be made. The
    readers ask for the stored results, or for ``paths`` (an instrument's split of what a
    connection costs: a small reply, a health check)."""
    server, cgroup = limited_server(
        profile, f"slowread-{settings.readers}", settings.limit_mb, settings.web_concurrency,
        settings.overrides, out, cache_ttl_seconds=600,
    )
    peaks = CgroupPeaks(cgroup, partial(kernel_queued, server.port))
    try:
        server.start()
        server.wait_healthy(60)
        ids = store_results(server.base_url, body, settings.results)
        _, reply_bytes = read_whole(server.base_url, ids[:1])
        fast_read = time_whole_read(server.base_url, ids[0])
        with contextlib.suppress(httpx.HTTPError):  # the release the cleanup loop would run
            httpx.post(f"{server.base_url}/admin/memory/release", timeout=30.0,
                       headers={"Authorization": f"Bearer {server.token}"})
        time.sleep(1.0)
        start_usage = _usage(cgroup)
        probe = HealthProbe(server.port, settings.seconds)
        asked = list(paths) if paths else [readable().result_of(i) for i in ids]
        readers = SlowReaders(server.port, asked, settings.readers, settings)
        probe.start()
        peaks.start()
        readers.start()
        readers.opened.wait(settings.seconds)
        time.sleep(settings.seconds)
        readers.stop.set()
        readers.join(30)
        health = probe.result()
        alive = server.exit_code() is None
        cut = closed_slow(server.base_url) if alive else None
        whole, _ = read_whole(server.base_url, ids) if alive else (False, 0)
        return SlowReadRun(
            profile,
            settings,
            readers.counts,
            cut,
            health,
            reply_bytes,
            start_usage,
            peaks.peak_usage,
            peaks.peak_working_set,
            peaks.peak_other,
            cgroup.events().oom_kills,
            alive,
            whole,
            server.log_path,
            fast_read,
        )
    finally:
        peaks.stop.set()
        server.stop()
        cgroup.remove()
