"""The manager's status: every figure it has, as frozen dataclasses with one ``as_dict()``.

``MemoryManager.status()`` builds one; the status route serves its ``as_dict()`` as JSON and the
Prometheus collector reads the same object, so the page and the metrics cannot disagree. The
JSON keys are a contract (a verifier reads them from deployed services): a field may be added,
never renamed. Units are in the names (``_bytes``, ``_seconds``); each field, its unit and where
it is read from: the table in docs/memory-manager.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Histogram

from .admission import Admission
from .budget import MemoryBudget
from .document import AllocatorDocument, CgroupDocument, CleanupDocument, StatusDocument
from .door import Door
from .holdings import Holdings, help_line
from .interpreter import Interpreter
from .measure import MB, HeapUsage
from .outbound import Outbound
from .release import ReleaseResult
from .smaps import MappingUsage


@dataclass(frozen=True)
class CgroupStatus:
    """The container's cgroup, one reading; None where the kernel says unlimited or a file was
    unreadable."""

    version: int  # 1 or 2
    limit_bytes: int | None
    usage_bytes: int | None  # page cache included
    working_set_bytes: int | None  # usage minus inactive page cache
    peak_bytes: int | None = None  # the kernel's high-water mark of usage

    def as_dict(self) -> CgroupDocument:
        return {
            "version": self.version,
            "limit_bytes": self.limit_bytes,
            "usage_bytes": self.usage_bytes,
            "working_set_bytes": self.working_set_bytes,
            "peak_bytes": self.peak_bytes,
        }


@dataclass(frozen=True)
class AllocatorStatus:
    name: str  # glibc, jemalloc, ... as mapped into the process
    library: str | None  # the mapped library's path, None for glibc's built-in malloc
    release_method: str  # malloc_trim, jemalloc_purge, ... or none (GC only)
    options: Mapping[str, str] = field(default_factory=dict)  # jemalloc: opt.<name>, version
    heap: HeapUsage | None = None  # the allocator's own account; with detail only

    def as_dict(self) -> AllocatorDocument:
        return {
            "name": self.name,
            "library": self.library,
            "release_method": self.release_method,
            "options": dict(self.options),
            "heap": self.heap.as_dict() if self.heap else None,
        }


@dataclass(frozen=True)
class DoorStatus:
    """Requests worked on at once (door.py): the limit, those inside and those waiting."""

    limit: int
    working: int
    waiting: int
    refused: int  # answered 503 after waiting their longest, since start

    @classmethod
    def of(cls, door: Door) -> DoorStatus:
        return cls(door.limit, door.working, door.waiting, door.refused)

    def as_dict(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "working": self.working,
            "waiting": self.waiting,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class OutboundStatus:
    """Large replies on their way out (outbound.py): what they hold and the pool they reserve
    their window from (None without admission control)."""

    slice_bytes: int
    window_bytes: int  # what one large reply may hold at once, reserved for it: two full slices
    responses: int  # large replies in progress
    queued_bytes: int  # what they hold now, each up to its window
    sliced: int  # large replies since start
    refused: int  # large replies answered 503 for want of room, since start
    cut_slow: int  # replies ended below the reply floor, since start
    capacity_bytes: int | None  # the budget's outbound part
    reserved_bytes: int | None
    waiting: int | None  # large replies waiting for room

    @classmethod
    def of(cls, outbound: Outbound) -> OutboundStatus:
        pool = outbound.pool
        return cls(
            slice_bytes=outbound.slice_bytes,
            window_bytes=outbound.window_bytes,
            responses=outbound.responses,
            queued_bytes=outbound.queued_bytes,
            sliced=outbound.sliced,
            refused=outbound.refused,
            cut_slow=outbound.cut_slow,
            capacity_bytes=pool.capacity_bytes if pool else None,
            reserved_bytes=pool.reserved_bytes if pool else None,
            waiting=pool.queued if pool else None,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "slice_bytes": self.slice_bytes,
            "window_bytes": self.window_bytes,
            "responses": self.responses,
            "queued_bytes": self.queued_bytes,
            "sliced": self.sliced,
            "refused": self.refused,
            "cut_slow": self.cut_slow,
            "capacity_bytes": self.capacity_bytes,
            "reserved_bytes": self.reserved_bytes,
            "waiting": self.waiting,
        }


@dataclass(frozen=True)
class QueueWait:
    """The admission queue's wait histogram: not a JSON figure, kept for the collector."""

    buckets: tuple[tuple[float, float], ...]  # (upper bound in seconds, cumulative count)
    count: float
    sum_seconds: float

    @classmethod
    def of(cls, histogram: Histogram) -> QueueWait:
        buckets: list[tuple[float, float]] = []
        count = total = 0.0
        for metric in histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_count"):
                    count = sample.value
                elif sample.name.endswith("_sum"):
                    total = sample.value
        return cls(tuple(buckets), count, total)


@dataclass(frozen=True)
class AdmissionStatus:
    capacity_bytes: int  # the budget's in-flight part
    reserved_bytes: int  # held by admitted requests now
    queued: int
    queue_limit: int
    max_wait_seconds: float
    admitted: int  # since start
    rejections: Mapping[str, int]  # 503s since start, by reason: budget, queue_timeout, pressure
    shedding: bool  # usage is over the high-water mark: new work on admitted routes is refused
    pressure_usage_bytes: int | None  # the last usage reading of the pressure check
    pressure_source: str | None  # "cgroup working set" or "RSS"
    high_water_bytes: int | None
    queue_wait: QueueWait = field(compare=False)

    @classmethod
    def of(cls, admission: Admission) -> AdmissionStatus:
        pressure = admission.pressure
        return cls(
            capacity_bytes=admission.capacity_bytes,
            reserved_bytes=admission.reserved_bytes,
            queued=admission.queued,
            queue_limit=admission.queue_limit,
            max_wait_seconds=admission.max_wait_seconds,
            admitted=admission.admitted,
            rejections=dict(admission.rejections),
            shedding=bool(pressure and pressure.active),
            pressure_usage_bytes=pressure.usage_bytes if pressure else None,
            pressure_source=pressure.source if pressure else None,
            high_water_bytes=pressure.high_water_bytes if pressure else None,
            queue_wait=QueueWait.of(admission.queue_wait),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "capacity_bytes": self.capacity_bytes,
            "reserved_bytes": self.reserved_bytes,
            "queued": self.queued,
            "queue_limit": self.queue_limit,
            "max_wait_seconds": self.max_wait_seconds,
            "admitted": self.admitted,
            "rejections": dict(self.rejections),
            "shedding": self.shedding,
            "pressure_usage_bytes": self.pressure_usage_bytes,
            "pressure_source": self.pressure_source,
            "high_water_bytes": self.high_water_bytes,
        }


@dataclass(frozen=True)
class ReleaseCount:
    trigger: str  # interval, idle, threshold, expiry, pressure, admin, ...
    outcome: str  # ok, failed, skipped, ...
    count: int

    def as_dict(self) -> dict[str, object]:
        return {"trigger": self.trigger, "outcome": self.outcome, "count": self.count}


@dataclass(frozen=True)
class ReleaseTotals:
    freed_bytes: int  # RSS returned by every release since start (before minus after, summed)
    by_outcome: tuple[ReleaseCount, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "freed_bytes": self.freed_bytes,
            "by_outcome": [row.as_dict() for row in self.by_outcome],
        }


@dataclass(frozen=True)
class CleanupStatus:
    enabled: bool
    running: bool  # the loop's task is alive
    interval_seconds: float
    threshold_bytes: int
    idle_release_seconds: float
    release_min_bytes: int
    runs: int  # loop wake-ups that ran, released or not
    failures: int  # loop, release and request-path check failures
    requests_seen: int  # requests counted as traffic (quiet paths left out)

    def as_dict(self) -> CleanupDocument:
        return {
            "enabled": self.enabled,
            "running": self.running,
            "interval_seconds": self.interval_seconds,
            "threshold_bytes": self.threshold_bytes,
            "idle_release_seconds": self.idle_release_seconds,
            "release_min_bytes": self.release_min_bytes,
            "runs": self.runs,
            "failures": self.failures,
            "requests_seen": self.requests_seen,
        }


@dataclass(frozen=True)
class MemoryStatus:
    """One worker's figures. ``uss_bytes``, ``pss_bytes`` and ``breakdown`` are None unless read
    with ``detail``; every figure the platform cannot give is None, never a guess."""

    pid: int
    rss_bytes: int | None
    uss_bytes: int | None
    pss_bytes: int | None
    replica_id: str | None
    limit_bytes: int  # the limit the manager works to; shown as ``limit_mb`` in JSON
    cgroup: CgroupStatus | None
    allocator: AllocatorStatus
    interpreter: Interpreter
    budget: MemoryBudget | None  # with admission control only
    admission: AdmissionStatus | None  # with admission control only
    outbound: OutboundStatus
    breakdown: tuple[MappingUsage, ...] | None  # resident memory by kind of mapping
    releases: tuple[ReleaseResult, ...]  # the most recent, oldest first
    release_totals: ReleaseTotals
    cleanup: CleanupStatus
    # Why ``cgroup`` is None where a cgroup was found: it has no memory limit of its own, so its
    # usage is the enclosing group's (a desktop session, a host), not this service's.
    cgroup_note: str | None = None
    # What the process holds, split by why (holdings.py); with detail only.
    holdings: Holdings | None = None
    door: DoorStatus | None = None  # where install put the door in front of the app

    @property
    def limit_mb(self) -> float:
        return self.limit_bytes / MB

    def as_dict(self) -> StatusDocument:
        """The JSON document of the status route, keys in their documented order."""
        return {
            "pid": self.pid,
            "rss_bytes": self.rss_bytes,
            "uss_bytes": self.uss_bytes,
            "pss_bytes": self.pss_bytes,
            "replica_id": self.replica_id,
            "limit_mb": self.limit_mb,
            "cgroup": self.cgroup.as_dict() if self.cgroup else None,
            "allocator": self.allocator.as_dict(),
            "interpreter": self.interpreter.as_dict(),
            "budget": self.budget.as_dict() if self.budget else None,
            "admission": self.admission.as_dict() if self.admission else None,
            "outbound": self.outbound.as_dict(),
            "breakdown": None
            if self.breakdown is None
            else [usage.as_dict() for usage in self.breakdown],
            "releases": [result.as_dict() for result in self.releases],
            "release_totals": self.release_totals.as_dict(),
            "cleanup": self.cleanup.as_dict(),
            "cgroup_note": self.cgroup_note,  # added keys follow: readers of those before keep them
            "holdings": self.holdings.as_dict() if self.holdings else None,
            "holdings_advice": help_line(self.holdings, self.allocator.name)
            if self.holdings
            else None,
            "door": self.door.as_dict() if self.door else None,
        }
