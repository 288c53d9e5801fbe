"""The memory manager: one object an ASGI app creates, starts in its lifespan and stops on
shutdown. It knows nothing about the app's workload; the app hands it cleanup hooks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp

from app.memory.admission import Admission
from app.memory.allocator import Allocator, detect_allocator
from app.memory.budget import MemoryBudget
from app.memory.cgroup import read_cgroup_memory
from app.memory.cleanup import CleanupConfig, CleanupHook, CleanupLoop, ExpirySource
from app.memory.guard import Activity, MemoryGuard, MemoryMiddleware
from app.memory.measure import MB, fmt_mb, process_memory, rss_bytes
from app.memory.metrics import MemoryCollector
from app.memory.pressure import Pressure
from app.memory.release import Releaser, ReleaseResult
from app.memory.smaps import read_breakdown

log = logging.getLogger(__name__)


class MemoryManager:
    def __init__(
        self,
        config: CleanupConfig,
        limit_bytes: int,
        check_min_seconds: float = 1.0,
        allocator: Allocator | None = None,
        read_rss: Callable[[], int] = rss_bytes,
    ) -> None:
        self.config = config
        self.limit_bytes = limit_bytes
        self.read_rss = read_rss
        self.allocator = allocator or detect_allocator()
        self.releaser = Releaser(self.allocator, read_rss)
        self.activity = Activity()
        self.loop = CleanupLoop(config, self.releaser, self.activity, read_rss=read_rss)
        self.guard = (
            MemoryGuard(config.threshold_bytes, self.loop.wake, check_min_seconds, read_rss)
            if config.enabled
            else None
        )
        self.budget: MemoryBudget | None = None
        self.admission: Admission | None = None
        self.collector = MemoryCollector(self)

    def enable_admission(
        self, budget: MemoryBudget, queue_limit: int = 16, max_wait_seconds: float = 5.0
    ) -> Admission:
        """Admission control over ``budget``'s in-flight part, shedding new work under pressure;
        the app puts ``gate.AdmissionGate`` in front of the routes it guards."""
        self.budget = budget
        self.admission = Admission(
            budget.inflight_bytes, queue_limit, max_wait_seconds, self._pressure(budget)
        )
        return self.admission

    def _pressure(self, budget: MemoryBudget) -> Pressure:
        """Against the container's working set where the cgroup has a limit (it counts every
        worker and the page cache the kernel will not drop first), else this process's RSS."""
        share = budget.high_water_bytes / budget.limit_bytes
        release_now = self.loop.wake_for_pressure
        cgroup = read_cgroup_memory()
        if cgroup is not None and cgroup.limit_bytes and cgroup.working_set_bytes is not None:
            mark = int(min(self.limit_bytes, cgroup.limit_bytes) * share)
            return Pressure(mark, _cgroup_working_set, "cgroup working set", on_start=release_now)
        return Pressure(budget.high_water_bytes, self.read_rss, "RSS", on_start=release_now)

    def add_cleanup_hook(self, hook: CleanupHook, expires_at: ExpirySource | None = None) -> None:
        """``hook`` runs before every release; ``expires_at`` (when all the hook's data will have
        expired) also wakes the loop then, so the memory comes back at the end of its TTL."""
        self.loop.hooks.append(hook)
        if expires_at is not None:
            self.loop.expiry_sources.append(expires_at)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return MemoryMiddleware(app, self.activity, self.guard)

    @property
    def failures(self) -> int:
        guard = self.guard.failures if self.guard is not None else 0
        return self.loop.failures + self.releaser.failures + guard

    def start(self) -> None:
        cgroup = read_cgroup_memory()
        log.info(
            "[memory] allocator %s%s, release by %s; limit %s; cgroup %s; RSS %s",
            self.allocator.name,
            f" ({self.allocator.library})" if self.allocator.library else "",
            self.allocator.method,
            fmt_mb(self.limit_bytes),
            f"v{cgroup.version} limit {fmt_mb(cgroup.limit_bytes)}" if cgroup else "none",
            fmt_mb(self._rss_or_none()),
        )
        if self.budget is not None and self.admission is not None:
            pressure = self.admission.pressure
            log.info(
                "%s; admission queue %d, wait %gs; shedding over %s %s",
                self.budget.log_line(),
                self.admission.queue_limit,
                self.admission.max_wait_seconds,
                pressure.source if pressure else "usage",
                fmt_mb(pressure.high_water_bytes if pressure else None),
            )
        self.loop.start()

    def _rss_or_none(self) -> int | None:
        try:
            return self.read_rss()
        except Exception:
            return None

    async def stop(self) -> None:
        await self.loop.stop()

    async def release(self, trigger: str = "admin") -> ReleaseResult:
        """A release now, waiting for one already running to finish first."""
        result = await self.releaser.release_async(trigger, wait=True)
        assert result is not None
        return result

    def _process_memory(self) -> dict[str, int | None]:
        """Process figures, or the pid alone where /proc cannot be read: a diagnostics page
        that fails exactly when something is wrong is no diagnostics page."""
        try:
            return process_memory().as_dict()
        except Exception:
            return {"pid": os.getpid(), "rss_bytes": None, "uss_bytes": None, "pss_bytes": None}

    def report(self) -> dict[str, Any]:
        """Everything /debug/memory shows; reads smaps, so run it off the event loop."""
        cgroup = read_cgroup_memory()
        return {
            **self._process_memory(),
            "replica_id": os.environ.get("RAILWAY_REPLICA_ID"),
            "limit_mb": self.limit_bytes / MB,
            "cgroup": None
            if cgroup is None
            else {
                "version": cgroup.version,
                "limit_bytes": cgroup.limit_bytes,
                "usage_bytes": cgroup.usage_bytes,
                "working_set_bytes": cgroup.working_set_bytes,
            },
            "allocator": {
                "name": self.allocator.name,
                "library": self.allocator.library,
                "release_method": self.allocator.method,
            },
            "budget": self.budget.as_dict() if self.budget else None,
            "admission": self.admission.status() if self.admission else None,
            "breakdown": [usage.as_dict() for usage in read_breakdown()],
            "releases": [result.as_dict() for result in self.releaser.history],
            "cleanup": {
                "enabled": self.config.enabled,
                "running": self.loop.running,
                "interval_seconds": self.config.interval_seconds,
                "threshold_bytes": self.config.threshold_bytes,
                "idle_release_seconds": self.config.idle_release_seconds,
                "release_min_bytes": self.config.release_min_bytes,
                "runs": self.loop.runs,
                "failures": self.failures,
                "requests_seen": self.activity.requests,
            },
        }


def _cgroup_working_set() -> int | None:
    reading = read_cgroup_memory()
    return reading.working_set_bytes if reading is not None else None
