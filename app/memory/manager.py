"""The memory manager: one object an ASGI app creates and wires with one call, ``install``.

It knows nothing about the app: the app passes in its quiet paths, its metric namespace, a
replica id, cleanup hooks and status sources. ``status()`` is the one source of the figures
that the status route and the Prometheus collector show.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from .admission import Admission
from .allocator import Allocator, detect_allocator
from .budget import MemoryBudget
from .cgroup import unlimited_note
from .cleanup import CleanupConfig, CleanupHook, CleanupLoop, ExpirySource
from .door import Door, DoorMiddleware
from .gate import AdmissionConfig, AdmissionGate
from .holdings import CPYTHON_MIMALLOC, PYMALLOC, Holdings, reach_line
from .interpreter import Interpreter, running_interpreter
from .logs import show_logs
from .measure import fmt_mb
from .metrics import MemoryCollector
from .outbound import Outbound, ReplySlicer
from .pressure import Pressure
from .readers import Readers
from .release import Releaser, ReleaseResult
from .smaps import MappingUsage
from .status import (
    AdmissionStatus,
    AllocatorStatus,
    CgroupStatus,
    CleanupStatus,
    DoorStatus,
    MemoryStatus,
    OutboundStatus,
    ReleaseCount,
    ReleaseTotals,
)
from .status_route import StatusSource, status_endpoint
from .traffic import Activity, ThresholdCheck, TrafficMiddleware

DEFAULT_STATUS_PATH = "/debug/memory"

log = logging.getLogger(__name__)


class MemoryManager:
    def __init__(
        self,
        config: CleanupConfig,
        limit_bytes: int,
        check_min_seconds: float = 1.0,
        allocator: Allocator | None = None,
        readers: Readers | None = None,
        *,
        quiet_paths: Iterable[str] = (),
        namespace: str = "",
        replica_id: str | None = None,
        interpreter: Interpreter | None = None,
        outbound: Outbound | None = None,
        door: Door | None = None,
    ) -> None:
        self.config = config
        self.limit_bytes = limit_bytes
        self.readers = readers or Readers()
        self.read_rss: Callable[[], int] = self.readers.rss
        self.quiet_paths = frozenset(quiet_paths)
        self.namespace = namespace
        self.replica_id = replica_id
        self.interpreter = interpreter or running_interpreter()
        self.allocator = allocator or detect_allocator()
        self.releaser = Releaser(self.allocator, self.read_rss)
        self.activity = Activity()
        self.loop = CleanupLoop(config, self.releaser, self.activity, read_rss=self.read_rss)
        self.threshold_check = (
            ThresholdCheck(config.threshold_bytes, self.loop.wake, check_min_seconds, self.read_rss)
            if config.enabled
            else None
        )
        self.budget: MemoryBudget | None = None
        self.admission: Admission | None = None
        # Replies sliced always (a reply floor if the app gives one); a pool once admission has
        # a budget.
        self.outbound = outbound or Outbound()
        self.door = door or Door()  # in front of the app unless install is told otherwise
        self._door_installed = False
        self.status_sources: dict[str, StatusSource] = {}
        self.collector = MemoryCollector(lambda: self.status(detail=False), namespace)

    def install(
        self,
        app: Starlette,
        admission: AdmissionConfig | None = None,
        *,
        status_token: str | None = None,
        status_path: str = DEFAULT_STATUS_PATH,
        slice_replies: bool = True,
        limit_working: bool = True,
    ) -> None:
        """Wire the manager into a Starlette or FastAPI app: count its traffic, optionally put
        admission control in front of routes, run the cleanup loop inside the app's own lifespan
        (started after the app's startup, stopped before its shutdown), and with a
        ``status_token`` serve the status at ``status_path`` (GET, bearer token, not in the
        schema; a quiet path). Without a token there is no such route. Large replies go out in
        slices under the server's flow control (``slice_replies=False`` leaves them whole: a
        plain service, the yardstick a comparison needs). At most ``door.limit`` requests are
        worked on at once, the rest wait outside (door.py; ``limit_working=False`` leaves the door
        out)."""
        if status_token is not None:
            if not status_token:
                raise ValueError("status_token is empty: give a token, or None for no route")
            self.quiet_paths = self.quiet_paths | {status_path}  # polling it is not traffic
            endpoint = status_endpoint(status_token.encode(), self.status_document)
            app.router.add_route(status_path, endpoint, methods=["GET"], include_in_schema=False)
        if slice_replies:  # added first: innermost, it sees the app's own reply messages
            app.add_middleware(ReplySlicer, outbound=self.outbound, quiet_paths=self.quiet_paths)
        if admission is not None:  # inside the traffic counter
            app.add_middleware(AdmissionGate, **self._gate_options(admission))
        if limit_working:  # outside the gate: a request waiting at the door reserves nothing
            app.add_middleware(DoorMiddleware, door=self.door, quiet_paths=self.quiet_paths)
            self._door_installed = True
        app.add_middleware(
            TrafficMiddleware,
            activity=self.activity,
            check=self.threshold_check,
            quiet_paths=self.quiet_paths,
        )
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with inner(app) as state, self.running():
                yield state

        app.router.lifespan_context = lifespan

    def _gate_options(self, config: AdmissionConfig) -> dict[str, Any]:
        admission = self.enable_admission(
            config.budget, config.queue_limit, config.max_wait_seconds
        )
        return {
            "admission": admission,
            "routes": config.routes,
            "max_body_bytes": config.max_body_bytes,
            "body_timeout_seconds": config.body_timeout_seconds,
            "limit_name": config.limit_name,
            "body_floor": config.body_floor,
            "lookahead_bytes": config.lookahead_bytes,
        }

    def running(self) -> AbstractAsyncContextManager[None]:
        """The cleanup loop for the length of a ``with``: for an ASGI framework's own lifespan."""

        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            self.start()
            try:
                yield
            finally:
                await self.stop()

        return run()

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The traffic counter, the door and the reply slicer around any ASGI app, for frameworks
        other than Starlette's."""
        sliced = ReplySlicer(app, self.outbound, self.quiet_paths)
        door = DoorMiddleware(sliced, self.door, self.quiet_paths)
        self._door_installed = True
        return TrafficMiddleware(door, self.activity, self.threshold_check, self.quiet_paths)

    def enable_admission(
        self, budget: MemoryBudget, queue_limit: int = 4, max_wait_seconds: float = 2.0
    ) -> Admission:
        """Admission control over ``budget``'s in-flight part, shedding new work under pressure;
        ``install(app, AdmissionConfig(...))`` calls it and puts the gate in front of the routes."""
        self.budget = budget
        self.admission = Admission(
            budget.inflight_bytes,
            queue_limit,
            max_wait_seconds,
            self._pressure(budget),
            namespace=self.namespace,
        )
        if budget.outbound_bytes > 0:  # large replies wait or are refused, never shed
            self.outbound.pool = Admission(
                budget.outbound_bytes,
                queue_limit,
                max_wait_seconds,
                namespace=self.namespace,
                label="outbound",
            )
        return self.admission

    def _pressure(self, budget: MemoryBudget) -> Pressure:
        """Against the container's working set where the cgroup has a limit (it counts every
        worker and the page cache the kernel will not drop first), else this process's RSS."""
        share = budget.high_water_bytes / budget.limit_bytes
        release_now = self.loop.wake_for_pressure
        cgroup = self.readers.cgroup()
        if cgroup is not None and cgroup.limit_bytes and cgroup.working_set_bytes is not None:
            mark = int(min(self.limit_bytes, cgroup.limit_bytes) * share)
            return Pressure(mark, self._working_set, "cgroup working set", on_start=release_now)
        return Pressure(budget.high_water_bytes, self.read_rss, "RSS", on_start=release_now)

    def _working_set(self) -> int | None:
        reading = self.readers.cgroup()
        return reading.working_set_bytes if reading is not None else None

    def add_status_source(self, name: str, read: StatusSource) -> None:
        """``read()``'s mapping appears in the status route's JSON under the top-level key
        ``name`` (called off the event loop, on each request): the service's own state beside
        the manager's figures. A JSON scalar (a string, a number) is shown as it is. A name the
        status already has is refused."""
        taken = set(MemoryStatus.__dataclass_fields__) | {"limit_mb"} | set(self.status_sources)
        if name in taken:
            raise ValueError(f"status source {name!r}: the status already has that key")
        self.status_sources[name] = read

    def status_document(self, holdings: bool = True) -> dict[str, object]:
        """The status route's JSON: ``status()`` with detail (the split of what the process
        holds unless ``holdings`` is False), then each source under its name. Blocking (it
        walks smaps): run it off the event loop."""
        document: dict[str, object] = dict(self.status(holdings=holdings).as_dict())
        for name, read in self.status_sources.items():
            try:
                value = read()
                document[name] = dict(value) if isinstance(value, Mapping) else value
            except Exception as exc:  # one broken source must not hide the figures
                document[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return document

    def add_cleanup_hook(self, hook: CleanupHook, expires_at: ExpirySource | None = None) -> None:
        """``hook`` runs before every release; ``expires_at`` (when all the hook's data will have
        expired) also wakes the loop then, so the memory comes back at the end of its TTL."""
        self.loop.hooks.append(hook)
        if expires_at is not None:
            self.loop.expiry_sources.append(expires_at)

    @property
    def failures(self) -> int:
        check = self.threshold_check.failures if self.threshold_check is not None else 0
        return self.loop.failures + self.releaser.failures + check

    def start(self) -> None:
        show_logs()
        cgroup = self.readers.cgroup()
        log.info(
            "[memory] allocator %s%s, release by %s; limit %s; cgroup %s; RSS %s",
            self.allocator.name,
            f" ({self.allocator.library})" if self.allocator.library else "",
            self.allocator.method,
            fmt_mb(self.limit_bytes),
            "none"
            if cgroup is None
            else f"v{cgroup.version} limit {fmt_mb(cgroup.limit_bytes)}"
            if cgroup.limit_bytes is not None
            else unlimited_note(cgroup),
            fmt_mb(self._rss_or_none()),
        )
        log.info("[memory] %s", self.reach_line())
        for line in self.interpreter.warnings():
            log.warning("[memory] %s", line)
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

    def reach_line(self) -> str:
        """What this process's allocator setup can give back, and what not, in one line."""
        objects = self.interpreter.objects
        return reach_line(
            self.allocator.name,
            objects == PYMALLOC,
            self.interpreter.free_threaded,
            cpython_mimalloc=objects == CPYTHON_MIMALLOC,
        )

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

    def status(self, detail: bool = True, holdings: bool = True) -> MemoryStatus:
        """Every figure the manager has: the status route shows it whole, the collector reads it
        without ``detail`` (no smaps walk). With ``detail``, run it off the event loop. A
        figure that cannot be read is None: a diagnostics page that fails exactly when something
        is wrong is no diagnostics page."""
        pid, rss, uss, pss = self._process_memory(detail)
        try:
            cgroup = self.readers.cgroup()
        except Exception:
            cgroup = None
        note = None
        if cgroup is not None and cgroup.limit_bytes is None:
            note = unlimited_note(cgroup)
            cgroup = None
        releaser = self.releaser
        return MemoryStatus(
            pid=pid,
            rss_bytes=rss,
            uss_bytes=uss,
            pss_bytes=pss,
            replica_id=self.replica_id,
            limit_bytes=self.limit_bytes,
            cgroup_note=note,
            holdings=self._holdings(detail and holdings),
            cgroup=None
            if cgroup is None
            else CgroupStatus(
                cgroup.version,
                cgroup.limit_bytes,
                cgroup.usage_bytes,
                cgroup.working_set_bytes,
                cgroup.peak_bytes,
            ),
            allocator=AllocatorStatus(
                self.allocator.name,
                self.allocator.library,
                self.allocator.method,
                dict(self.allocator.options),  # as the allocator reports them
                self.allocator.heap_usage() if detail else None,  # its own account of the heap
            ),
            interpreter=self.interpreter,
            budget=self.budget,
            admission=AdmissionStatus.of(self.admission) if self.admission else None,
            outbound=OutboundStatus.of(self.outbound),
            door=DoorStatus.of(self.door) if self._door_installed else None,
            breakdown=self._breakdown(detail),
            releases=tuple(releaser.history),
            release_totals=ReleaseTotals(
                releaser.freed_bytes_total,
                tuple(
                    ReleaseCount(trigger, outcome, count)
                    for (trigger, outcome), count in sorted(releaser.counts.items())
                ),
            ),
            cleanup=CleanupStatus(
                enabled=self.config.enabled,
                running=self.loop.running,
                interval_seconds=self.config.interval_seconds,
                threshold_bytes=self.config.threshold_bytes,
                idle_release_seconds=self.config.idle_release_seconds,
                release_min_bytes=self.config.release_min_bytes,
                runs=self.loop.runs,
                failures=self.failures,
                requests_seen=self.activity.requests,
            ),
        )

    def _process_memory(self, detail: bool) -> tuple[int, int | None, int | None, int | None]:
        """(pid, RSS, USS, PSS); without ``detail`` RSS only (USS and PSS walk every mapping),
        and the pid alone where /proc cannot be read."""
        try:
            if detail:
                figures = self.readers.process()
                return figures.pid, figures.rss_bytes, figures.uss_bytes, figures.pss_bytes
            return os.getpid(), self.read_rss(), None, None
        except Exception:
            return os.getpid(), None, None, None

    def _holdings(self, detail: bool) -> Holdings | None:
        if not detail:
            return None
        try:
            return self.readers.holdings(self.allocator.heap_usage)
        except Exception:
            return None

    def _breakdown(self, detail: bool) -> tuple[MappingUsage, ...] | None:
        if not detail:
            return None
        try:
            return tuple(self.readers.breakdown())
        except Exception:
            return ()
