"""What one submission costs: the bytes a admitted route holds per body byte, the figure its cost
factor must cover (admission reserves ``Content-Length x factor`` before a body is read).

Each body goes to a fresh server, as the verifier starts it, inside the same memory cgroup as the
floods: the first submission is the costly one (validators and caches are built on it). The
kernel keeps each process's peak resident set (``VmHWM``); it is reset just before the request
(``/proc/<pid>/clear_refs``, 5), so the growth is the peak during the submission less the RSS
before it, exact, with no sampler racing the allocator. One worker, so the process that
answers is the one measured. The body goes to the first heavy request the workload declares
(app/load.py), built by the workload to the shape asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from app.load import BodyShape, HeavyRequest
from app.memory.measure import MB
from scripts.verify.core.declared import heavy_requests
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.run import limited_server

__all__ = ["BodyShape", "CostRun", "body_of", "measured", "run_cost"]


def measured() -> HeavyRequest:
    """The request one submission is measured on: the first the workload declares."""
    return heavy_requests()[0]


def body_of(shape: BodyShape) -> bytes:
    """The declared request's body of ``shape`` (the workload builds it; deterministic)."""
    return measured().body(shape)


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
    request = measured()
    body = request.body(shape)
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
            reply = client.request(
                request.method, request.path, content=body,
                headers={"content-type": request.content_type},
            )  # fmt: skip
        peak = peak_rss(pid)
        if reply.status_code != 201:
            raise RunNotMade(f"the submission got {reply.status_code}: {reply.text[:200]}")
        return CostRun(profile, shape, len(body), reply.status_code, before, peak)
    finally:
        server.stop()
        cgroup.remove()
