"""The application factory: wiring only. `uvicorn app.main:create_app --factory`.

The service is a frame (health, metrics, the memory manager and its status route, the budget,
the edge) with workloads mounted into it. ``workloads()`` is the one place that names them:
delete a workload's line there and its import, and the service runs on without it.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from pydantic_settings import BaseSettings

from app import diagnostics
from app.budget import service_admission
from app.config import ConfigError, Settings, load, load_settings, near_misses
from app.edge.accesslog import AccessLogMiddleware
from app.edge.protocol import EdgeCollector
from app.errors import validation_error_handler
from app.frame import Frame, StartupStep, Workload
from app.memory import CleanupConfig, Door, MemoryManager
from app.memory.measure import MB
from app.memory.outbound import Outbound, ReplyFloor
from app.profiles import load_profiles
from app.workload import BulkWorkload  # the reference workload: see README "Make it yours"

log = logging.getLogger("app")


def workloads() -> list[Workload]:
    """What the service serves besides health, metrics and its memory status, one per line."""
    return [
        BulkWorkload(),
    ]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(levelname)-9s [%(process)d] %(message)s", force=True
    )


def load_configuration(mounted: Sequence[Workload] | None = None) -> Settings:
    """The frame's settings, with every workload's settings checked too: ConfigError carries
    one line per bad variable of either, so the launcher stops on all of them at once."""
    lines: list[str] = []
    settings = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        lines += exc.lines
    for workload in workloads() if mounted is None else mounted:
        try:
            load(workload.settings_type)
        except ConfigError as exc:
            lines += exc.lines
    if lines or settings is None:
        raise ConfigError(lines)
    return settings


def warn_near_misses(mounted: Sequence[Workload]) -> None:
    """One warning line per variable that looks like a setting of ours but is none (a typo)."""
    types: list[type[BaseSettings]] = [Settings, *(w.settings_type for w in mounted)]
    for line in near_misses(types, os.environ):
        log.warning("[app] %s", line)


def memory_manager(settings: Settings) -> MemoryManager:
    config = CleanupConfig(
        enabled=settings.memory_cleanup,
        interval_seconds=settings.memory_cleanup_interval,
        threshold_bytes=int(settings.memory_cleanup_threshold_mb * MB),
        idle_release_seconds=settings.memory_idle_release_seconds,
        release_min_bytes=int(settings.memory_release_min_mb * MB),
    )
    return MemoryManager(
        config,
        int(settings.limit_mb * MB),
        settings.memory_check_min_seconds,
        quiet_paths=diagnostics.QUIET_PATHS,
        replica_id=os.environ.get("RAILWAY_REPLICA_ID"),  # /debug/memory tells replicas apart
        # The reply floor at the ASGI level, under any server; app/edge's is uvicorn h11's own.
        outbound=Outbound(
            floor=ReplyFloor(settings.min_response_rate_bytes, settings.min_rate_grace_seconds)
        ),
        # Twice the threads a synchronous route waits for, unless MAX_REQUESTS_WORKING says.
        door=Door(settings.max_requests_working or 2 * settings.threadpool_size),
    )


def check_profile(settings: Settings, memory: MemoryManager) -> None:
    """A profile that names an allocator the process does not have, or allocator settings
    that did not take (an option jemalloc ignored), is a deployment error."""
    if memory.allocator.not_applied is not None:
        raise ConfigError([f"configuration error: {memory.allocator.not_applied}"])
    if settings.memory_profile is None:
        return
    expected = load_profiles().get(settings.memory_profile).allocator
    if memory.allocator.name != expected:
        raise ConfigError(
            [
                f"configuration error: MEMORY_PROFILE={settings.memory_profile!r} needs {expected} "
                f"but {memory.allocator.name} is running: start with `python -m app.launch`"
            ]
        )


def build_app(settings: Settings, mounted: Sequence[Workload] | None = None) -> FastAPI:
    """The service with ``mounted`` workloads (default: ``workloads()``) in its frame."""
    memory = memory_manager(settings)
    check_profile(settings, memory)
    registry = CollectorRegistry()
    registry.register(memory.collector)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    startup: list[StartupStep] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for step in startup:
            await step()
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        # The event loop gives the GIL up at every select, recv and send, several times per
        # request, and waits to take it back from a worker thread running Python (a bulk
        # submission validating and encoding) for up to the switch interval each time. Python's
        # own 5 ms by default: measured A B A B on a quiet machine, /healthz stayed well under
        # its target at 16 bulk posts in flight either way, and 1 ms made those posts take
        # longer (lab/loop/README.md). A service whose light requests wait behind CPU-bound
        # threads can shorten it.
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        log.info(
            "[app] threadpool %d; %d worker(s) share the limit; GIL switch interval %g ms",
            settings.threadpool_size,
            settings.web_concurrency,
            settings.switch_interval_ms,
        )
        # Startup objects (modules, routes, validators: ~70k tracked objects) live for the whole
        # process; frozen, a release's gc.collect() skips them instead of holding the GIL for
        # ~30 ms while it walks them. The memory manager starts after this (memory.install).
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(
        title="Lean memory service",
        summary="A FastAPI service that returns memory to the OS after a traffic spike.",
        lifespan=lifespan,
        # Off by default: Swagger UI and ReDoc load their scripts from a CDN into this origin.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        # The trailing-slash redirect builds its Location from Host and X-Forwarded-Proto.
        redirect_slashes=False,
        exception_handlers={RequestValidationError: validation_error_handler},
    )
    frame = Frame(app, settings, memory, registry)
    app.state.frame = frame
    memory.add_status_source("profile", lambda: settings.memory_profile)  # a name, or None
    app.include_router(diagnostics.router)
    if settings.admin_token is not None:  # else /debug and /admin answer 404 to every method
        app.include_router(diagnostics.admin_router)
    for workload in workloads() if mounted is None else mounted:
        workload.mount(frame)
    startup.extend(frame.startup)
    admission = (
        service_admission(settings, memory, frame.admitted, frame.held)
        if settings.memory_admission
        else None
    )
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    # The admission gate sits inside the traffic counter; /debug/memory is the status route.
    # MEMORY_ADMISSION=0 (the baseline) also leaves replies whole and the door open, as a plain
    # service has them.
    memory.install(
        app, admission, status_token=token, status_path="/debug/memory",
        slice_replies=settings.memory_admission,
        limit_working=settings.memory_admission and settings.max_requests_working != 0,
    )
    if admission is not None:
        registry.register(EdgeCollector())
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)  # added last: outermost, sees every answer
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; bad configuration exits with one line per bad variable and status 2."""
    try:
        settings = settings or load_configuration()
        configure_logging(settings.log_level)
        mounted = workloads()
        warn_near_misses(mounted)
        return build_app(settings, mounted)
    except ConfigError as exc:
        sys.stderr.write("\n".join(exc.lines) + "\n")
        raise SystemExit(2) from None
