"""Give freed memory back to the OS: gc.collect(), then the allocator's own release.

Releases never overlap: one lock covers the cleanup loop, the request-path threshold check and
the admin endpoint, because two trims at once only contend for the same arena locks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from .allocator import Allocator, detect_allocator
from .measure import fmt_mb, rss_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseResult:
    trigger: str  # interval, idle, threshold, admin, manual
    started_at: float  # unix time
    rss_before_bytes: int
    rss_after_bytes: int
    gc_collected: int
    allocator: str
    method: str  # malloc_trim, jemalloc_purge, ... or none (GC only)
    allocator_released: bool | None  # what the allocator said; None when it was not called
    duration_seconds: float
    ok: bool
    error: str | None = None

    @property
    def freed_bytes(self) -> int:
        """RSS before minus after; negative when other threads grew the heap meanwhile."""
        return self.rss_before_bytes - self.rss_after_bytes

    def as_dict(self) -> dict[str, object]:
        return {
            "trigger": self.trigger,
            "started_at": self.started_at,
            "rss_before_bytes": self.rss_before_bytes,
            "rss_after_bytes": self.rss_after_bytes,
            "freed_bytes": self.freed_bytes,
            "gc_collected": self.gc_collected,
            "allocator": self.allocator,
            "method": self.method,
            "allocator_released": self.allocator_released,
            "duration_seconds": round(self.duration_seconds, 6),
            "ok": self.ok,
            "error": self.error,
        }

    def log_line(self) -> str:
        if self.method == "none":
            outcome = "no allocator release available (GC only)"
        elif self.ok:
            outcome = f"{self.method}: ok"
        else:
            outcome = f"{self.method}: failed ({self.error})"
        return (
            f"Memory Release: {fmt_mb(max(self.freed_bytes, 0))} freed | "
            f"RSS: {fmt_mb(self.rss_before_bytes)} -> {fmt_mb(self.rss_after_bytes)} | "
            f"GC collected: {self.gc_collected} objects | {outcome} | "
            f"{self.duration_seconds * 1000:.0f}ms ({self.trigger})"
        )


class Releaser:
    """Runs releases one at a time and keeps the recent results for /debug/memory and metrics."""

    def __init__(
        self,
        allocator: Allocator | None = None,
        read_rss: Callable[[], int] = rss_bytes,
        history: int = 20,
    ) -> None:
        self.allocator = allocator or detect_allocator()
        self._read_rss = read_rss
        self._lock = threading.Lock()
        self.history: deque[ReleaseResult] = deque(maxlen=history)
        self.counts: Counter[tuple[str, str]] = Counter()  # (trigger, ok|failed)
        self.failures = 0
        self.freed_bytes_total = 0

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def last(self) -> ReleaseResult | None:
        return self.history[-1] if self.history else None

    def release(self, trigger: str = "manual", wait: bool = True) -> ReleaseResult | None:
        """Blocking release; None when ``wait`` is False and another release is running."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            result = self._release(trigger)
        finally:
            self._lock.release()
        self._record(result)
        return result

    async def release_async(self, trigger: str, wait: bool = True) -> ReleaseResult | None:
        """The same, run in a worker thread: the allocator call drops the GIL, so the event loop
        keeps serving while a trim walks the arenas."""
        return await asyncio.to_thread(self.release, trigger, wait)

    def _release(self, trigger: str) -> ReleaseResult:
        started_at = time.time()
        start = time.perf_counter()
        errors: list[str] = []
        before = self._rss_or_zero(errors)
        collected = gc.collect()
        released: bool | None = None
        if self.allocator.release is not None:
            try:
                released = self.allocator.release()
            except Exception as exc:  # an allocator failure must not take the service down
                errors.append(f"{type(exc).__name__}: {exc}")
        after = self._rss_or_zero(errors)
        error = "; ".join(errors) or None
        return ReleaseResult(
            trigger=trigger,
            started_at=started_at,
            rss_before_bytes=before,
            rss_after_bytes=after,
            gc_collected=collected,
            allocator=self.allocator.name,
            method=self.allocator.method,
            allocator_released=released,
            duration_seconds=time.perf_counter() - start,
            ok=error is None,
            error=error,
        )

    def _rss_or_zero(self, errors: list[str]) -> int:
        """RSS, or 0 with the reason noted: a failed reading makes the result not ok, it does
        not turn a release into an exception."""
        try:
            return self._read_rss()
        except Exception as exc:
            errors.append(f"RSS unreadable: {type(exc).__name__}: {exc}")
            return 0

    def _record(self, result: ReleaseResult) -> None:
        self.history.append(result)
        self.counts[(result.trigger, "ok" if result.ok else "failed")] += 1
        self.freed_bytes_total += max(result.freed_bytes, 0)
        if not result.ok:
            self.failures += 1
        (log.info if result.ok else log.warning)(result.log_line())


_default: Releaser | None = None


def force_release_memory(trigger: str = "manual") -> ReleaseResult:
    """gc.collect() plus the running allocator's release, for code outside the service."""
    global _default
    if _default is None:
        _default = Releaser()
    result = _default.release(trigger)
    assert result is not None  # a waiting release always runs
    return result
