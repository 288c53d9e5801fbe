"""One run of the comparison: a fresh server of one stack, one workload against it, and the RSS
of the server's process tree sampled every 0.1 s from before the load to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.memory.measure import MB
from lab.stack.bulk import bulk
from lab.stack.light import light
from lab.stack.server import StackServer
from lab.stack.stacks import STACKS, Slot
from scripts.verify.core.percentile import percentile_or_none
from scripts.verify.core.sampling import tree_sample
from scripts.verify.overload.flood import FloodResult

HOST = "127.0.0.1"
SAMPLE_SECONDS = 0.1
HEALTHY_WITHIN_SECONDS = 60.0


@dataclass(frozen=True)
class Workloads:
    """The size of each workload: light's connections and seconds, bulk's posts, records per
    post and posts in flight."""

    connections: int
    seconds: float
    bulk_posts: int
    bulk_records: int
    bulk_at_once: int


# The bulk spike and the light load of lab/stack/README.md.
DEFAULT_SIZES = Workloads(
    connections=128, seconds=15.0, bulk_posts=64, bulk_records=3000, bulk_at_once=8
)


class RssSampler(threading.Thread):
    """The RSS of a process tree every 0.1 s, summed over its processes, in bytes."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="stack-rss", daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.readings: list[int] = []

    def read(self) -> None:
        with contextlib.suppress(psutil.Error):  # the server is gone; the run reports it
            self.readings.append(tree_sample(self.pid, 0.0).rss_bytes or 0)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            self.read()


@dataclass
class StackRun:
    slot: Slot
    result: FloodResult
    rss_start_bytes: int
    rss_peak_bytes: int
    server_log: Path

    @property
    def errors(self) -> int:
        """Connection errors and replies other than 2xx (and 503, which a bulk post retries)."""
        failed = sum(n for s, n in self.result.statuses.items() if not 200 <= s < 300 and s != 503)
        return failed + sum(self.result.errors.values())

    def as_dict(self) -> dict[str, object]:
        latencies = self.result.accepted_latencies
        stack = STACKS[self.slot.stack]
        return {
            "workload": self.slot.workload,
            "round": self.slot.round,
            "stack": stack.name,
            "http": stack.http,
            "loop": stack.loop,
            "seconds": round(self.result.seconds, 2),
            "requests": self.result.requests,
            "accepted": len(latencies),
            "req_per_s": round(self.result.goodput, 1),
            "p50_ms": _ms(percentile_or_none(latencies, 0.5)),
            "p99_ms": _ms(percentile_or_none(latencies, 0.99)),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.result.statuses.items())},
            "connection_errors": dict(self.result.errors),
            "rss_start_mb": round(self.rss_start_bytes / MB, 1),
            "rss_peak_mb": round(self.rss_peak_bytes / MB, 1),
            "server_log": str(self.server_log),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _load(slot: Slot, port: int, sizes: Workloads) -> FloodResult:
    if slot.workload == "light":
        return asyncio.run(light(HOST, port, sizes.connections, sizes.seconds))
    return asyncio.run(
        bulk(HOST, port, sizes.bulk_posts, sizes.bulk_records, sizes.bulk_at_once)
    )


def run_slot(slot: Slot, sizes: Workloads, out: Path) -> StackRun:
    """One run; RunNotMade when the stack is not installed or the server never gets healthy."""
    stack = STACKS[slot.stack]
    stack.check_installed()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"server-{slot.workload}-{slot.round}-{slot.stack}.log"
    with tempfile.TemporaryDirectory(prefix=f"stack-{slot.stack}-") as workdir:
        server = StackServer(stack, Path(workdir), log_path)
        try:
            server.start()
            server.wait_healthy(HEALTHY_WITHIN_SECONDS)
            assert server.process is not None
            sampler = RssSampler(server.process.pid)
            sampler.read()
            start = sampler.readings[-1] if sampler.readings else 0
            sampler.start()
            try:
                result = _load(slot, server.port, sizes)
            finally:
                sampler.stop.set()
                sampler.join()
            sampler.read()
        finally:
            server.stop()
    time.sleep(0.5)  # the port and the memory of the stopped server go back before the next
    return StackRun(slot, result, start, max(sampler.readings, default=0), log_path)
