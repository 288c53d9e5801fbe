"""One overload run: the service started as the verifier starts it, inside a real memory cgroup,
flooded by ``clients`` sending large valid bodies for ``seconds`` while /healthz is probed and
the cgroup's working set is sampled; then what it did: answers, goodput, latencies, peak, OOM
kills, whether it is still alive, and whether every reservation came back.

What is sent is what the workload declares (app/load.py): each heavy request with its largest
body, built before any server starts.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.load import HeavyRequest
from app.memory.measure import MB
from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.declared import heavy_requests
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.local import LocalServer, http_get
from scripts.verify.core.percentile import percentile_or_none as percentile
from scripts.verify.overload.flood import (
    FloodResult,
    HealthResult,
    flood,
    probe_health,
)

HOST = "127.0.0.1"


def large_body(records: int | None = None) -> bytes:
    """The first declared heavy request's largest body (the reference workload's: the most
    records a submission takes, each with a long note, ~7.7 MB, under MAX_BODY_MB); with
    ``records``, the same shape with that many records."""
    request = heavy_requests()[0]
    shape = request.largest
    return request.body(shape if records is None else replace(shape, records=records))


def flood_sends() -> list[tuple[HeavyRequest, bytes]]:
    """Each declared heavy request with its largest body, built now: before any server runs."""
    return [(request, request.body(request.largest)) for request in heavy_requests()]


@dataclass(frozen=True)
class OverloadSettings:
    clients: int = 64
    seconds: float = 30.0
    limit_mb: float = 500.0
    chunked: bool = False
    honour_retry_after: bool = False
    web_concurrency: int = 1
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class OverloadRun:
    profile: str
    settings: OverloadSettings
    flood: FloodResult
    health: HealthResult
    peak_working_set_bytes: int
    peak_usage_bytes: int
    oom_kills: int | None  # None where the kernel does not count them
    alive: bool
    reserved_after_bytes: float | None
    server_log: Path

    def as_dict(self) -> dict[str, object]:
        latencies = self.flood.accepted_latencies
        return {
            "profile": self.profile,
            "clients": self.settings.clients,
            "seconds": round(self.flood.seconds, 1),
            "chunked": self.settings.chunked,
            "honour_retry_after": self.settings.honour_retry_after,
            "limit_mb": self.settings.limit_mb,
            "requests": self.flood.requests,
            "statuses": {str(k): v for k, v in sorted(self.flood.statuses.items())},
            "connection_errors": dict(self.flood.errors),
            "error_share": round(self.flood.error_share, 4),
            "goodput_per_s": round(self.flood.goodput, 4),
            "accepted_p50_s": _round(percentile(latencies, 0.5)),
            "accepted_p99_s": _round(percentile(latencies, 0.99)),
            "health_probes": len(self.health.latencies) + self.health.failures,
            "health_failures": self.health.failures,
            "health_worst_s": round(self.health.worst, 3),
            "peak_working_set_mb": round(self.peak_working_set_bytes / MB, 1),
            "peak_usage_mb": round(self.peak_usage_bytes / MB, 1),
            "oom_kills": self.oom_kills,
            "alive": self.alive,
            "reserved_after_bytes": self.reserved_after_bytes,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class CgroupPeaks(threading.Thread):
    """The cgroup's working set and usage every 50 ms; with ``every_second``, also whatever that
    reads once a second (the slow-reader run: the kernel's send queues), its largest kept."""

    def __init__(
        self, cgroup: MemoryCgroup, every_second: Callable[[], int | None] | None = None
    ) -> None:
        super().__init__(name="overload-sampler", daemon=True)
        self.cgroup = cgroup
        self.every_second = every_second
        self.stop = threading.Event()
        self.peak_working_set = 0
        self.peak_usage = 0
        self.peak_other: int | None = None

    def run(self) -> None:
        ticks = 0
        while not self.stop.wait(0.05):
            reading = self.cgroup.read()
            if reading is not None:
                self.peak_working_set = max(self.peak_working_set, reading.working_set_bytes or 0)
                self.peak_usage = max(self.peak_usage, reading.usage_bytes or 0)
            ticks += 1
            if self.every_second is not None and ticks % 20 == 0:
                value = self.every_second()
                if value is not None:
                    self.peak_other = max(self.peak_other or 0, value)


def limited_server(
    profile: str,
    name: str,
    limit_mb: float,
    web_concurrency: int,
    overrides: dict[str, str],
    out: Path | None,
    cache_ttl_seconds: float = 300,
) -> tuple[LocalServer, MemoryCgroup]:
    """The service as the verifier starts it, not yet started, in a fresh memory cgroup of
    ``limit_mb``; its log in ``out`` (else a temporary folder) as server-<profile>-<name>.log."""
    workdir = Path(tempfile.mkdtemp(prefix=f"overload-{profile}-"))
    log_dir = out or workdir
    log_dir.mkdir(parents=True, exist_ok=True)
    cgroup = MemoryCgroup(limit_mb).create()
    server = LocalServer(
        profile,
        workdir,
        log_dir / f"server-{profile}-{name}.log",
        cleanup_interval_seconds=60,
        cache_ttl_seconds=cache_ttl_seconds,
        limit_mb=limit_mb,
        cgroup=cgroup,
        web_concurrency=web_concurrency,
        overrides={"ACCESS_LOG": "0", **overrides},
    )
    return server, cgroup


def reserved_bytes(server: LocalServer) -> float | None:
    """memory_admission_reserved_bytes from /metrics; None where admission is off or unreadable."""
    try:
        status, body = http_get(f"{server.base_url}/metrics", timeout=5.0)
    except OSError:
        return None
    if status != 200:
        return None
    found = re.search(rb"^memory_admission_reserved_bytes ([0-9.e+]+)$", body, re.M)
    return float(found.group(1)) if found else None


async def _load(
    port: int, settings: OverloadSettings, sends: list[tuple[HeavyRequest, bytes]]
) -> tuple[FloodResult, HealthResult]:
    stop = asyncio.Event()
    health = asyncio.create_task(probe_health(HOST, port, stop))
    try:
        result = await flood(
            HOST,
            port,
            sends,
            settings.clients,
            settings.seconds,
            settings.chunked,
            settings.honour_retry_after,
        )
    finally:
        stop.set()
    return result, await health


def run_overload(profile: str, settings: OverloadSettings, out: Path | None = None) -> OverloadRun:
    """One run; RunNotMade when the service cannot be started or no cgroup can be made."""
    sends = flood_sends()
    server, cgroup = limited_server(
        profile, str(settings.clients), settings.limit_mb, settings.web_concurrency,
        settings.overrides, out,
    )
    sampler = CgroupPeaks(cgroup)
    try:
        server.start()
        server.wait_healthy(60)
        sampler.start()
        result, health = asyncio.run(_load(server.port, settings, sends))
        time.sleep(1.0)  # reservations of the last replies are returned after they are sent
        alive = server.exit_code() is None and _healthy(server)
        reserved = reserved_bytes(server) if alive else None
        return OverloadRun(
            profile,
            settings,
            result,
            health,
            sampler.peak_working_set,
            sampler.peak_usage,
            cgroup.events().oom_kills,
            alive,
            reserved,
            server.log_path,
        )
    except RunNotMade:
        raise
    finally:
        sampler.stop.set()
        server.stop()
        cgroup.remove()


def _healthy(server: LocalServer) -> bool:
    try:
        return http_get(f"{server.base_url}/healthz", timeout=5.0)[0] == 200
    except OSError:
        return False
