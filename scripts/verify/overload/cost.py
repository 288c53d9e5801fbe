"""What one submission costs: the bytes a guarded route holds per body byte, the figure its cost
factor must cover (admission reserves ``Content-Length x factor`` before a body is read).

Each body goes to a fresh server, as the verifier starts it, inside the same memory cgroup as the
floods: the first submission is the costly one (validators and caches are built on it). The
kernel keeps each process's peak resident set (``VmHWM``); it is reset just before the request
(``/proc/<pid>/clear_refs``, 5), so the growth is the peak during the submission less the RSS
before it, exact, with no sampler racing the allocator. One worker, so the process that
answers is the one measured.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import httpx
import psutil

from app.memory.measure import MB
from loadtest.payloads import make_record
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.run import limited_server

PATH = "/bulk/sync"


@dataclass(frozen=True)
class BodyShape:
    """``records`` records, each with a note of ``note_chars`` characters (0: the load test's
    own records, ~130 bytes)."""

    records: int
    note_chars: int = 0

    @classmethod
    def parse(cls, text: str) -> BodyShape:
        """``RECORDS`` or ``RECORDS:NOTE_CHARS``; ValueError otherwise."""
        records, _, note = text.strip().partition(":")
        shape = cls(int(records), int(note) if note else 0)
        if shape.records < 1 or shape.note_chars < 0:
            raise ValueError(text)
        return shape


@lru_cache(maxsize=8)
def body_of(shape: BodyShape) -> bytes:
    """The body, deterministic per shape; built before any server starts."""
    rng = random.Random(shape.records * 31 + shape.note_chars)
    rows = []
    for _ in range(shape.records):
        row = make_record(rng)
        if shape.note_chars:
            row["note"] = "x" * shape.note_chars
        rows.append(row)
    return json.dumps({"records": rows}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CostRun:
    profile: str
    shape: BodyShape
    body_bytes: int
    status: int
    rss_before_bytes: int
    peak_rss_bytes: int

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_rss_bytes - self.rss_before_bytes)

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "records": self.shape.records,
            "note_chars": self.shape.note_chars,
            "record_bytes": round(self.body_bytes / self.shape.records),
            "body_mb": round(self.body_bytes / MB, 2),
            "status": self.status,
            "rss_before_mb": round(self.rss_before_bytes / MB, 1),
            "growth_mb": round(self.growth_bytes / MB, 1),
            "per_body_byte": round(self.growth_bytes / self.body_bytes, 1),
        }


def peak_rss(pid: int) -> int:
    """The process's peak resident set since its last reset (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RunNotMade(f"/proc/{pid}/status has no VmHWM")


def reset_peak(pid: int) -> None:
    """Start the peak over from the current RSS (Linux 4.0 and later)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        raise RunNotMade(f"cannot reset the peak RSS of pid {pid}: {exc}") from exc


def run_cost(
    profile: str, shape: BodyShape, limit_mb: float, overrides: dict[str, str], out: Path | None
) -> CostRun:
    """One submission of ``shape`` to a fresh server; RunNotMade when none can be started or the
    submission is not stored (a 503 or a 422 would measure a refusal, not a submission)."""
    body = body_of(shape)
    server, cgroup = limited_server(
        profile, f"cost-{shape.records}-{shape.note_chars}", limit_mb, 1, overrides, out
    )
    try:
        server.start()
        server.wait_healthy(60)
        assert server.process is not None
        pid = server.process.pid
        reset_peak(pid)
        before = psutil.Process(pid).memory_info().rss
        with httpx.Client(base_url=server.base_url, timeout=120.0) as client:
            reply = client.post(PATH, content=body, headers={"content-type": "application/json"})
        peak = peak_rss(pid)
        if reply.status_code != 201:
            raise RunNotMade(f"the submission got {reply.status_code}: {reply.text[:200]}")
        return CostRun(profile, shape, len(body), reply.status_code, before, peak)
    finally:
        server.stop()
        cgroup.remove()
