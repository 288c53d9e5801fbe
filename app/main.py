"""The application factory: wiring only. `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app import diagnostics
from app.admission import bulk_admission
from app.config import MB, ConfigError, Settings, load_settings
from app.edge.accesslog import AccessLogMiddleware
from app.edge.protocol import EdgeCollector
from app.errors import validation_error_handler
from app.memory import CleanupConfig, MemoryManager
from app.profiles import load_profiles
from app.workload import database
from app.workload.bulk import BulkService
from app.workload.cache import BulkCache
from app.workload.routes import router as bulk_router

log = logging.getLogger("app")


class CacheCollector(Collector):
    def __init__(self, cache: BulkCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.cache.stats()
        yield GaugeMetricFamily("bulk_cache_entries", "Results in the bulk cache.", stats.entries)
        yield GaugeMetricFamily("bulk_cache_bytes", "Bytes held by the bulk cache.", stats.bytes)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(levelname)-9s [%(process)d] %(message)s", force=True
    )


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


def build_app(settings: Settings) -> FastAPI:
    memory = memory_manager(settings)
    check_profile(settings, memory)
    cache = BulkCache(
        settings.cache_ttl_seconds,
        settings.cache_max_entries,
        int(settings.worker_cache_max_mb * MB),
    )
    memory.add_cleanup_hook(cache.purge_expired, expires_at=cache.all_expired_at)
    registry = CollectorRegistry()
    registry.register(memory.collector)
    registry.register(CacheCollector(cache))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        products = await asyncio.to_thread(database.initialize, settings.database_path)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        log.info(
            "[app] database %s ready (%d products); threadpool %d; this worker's share of %d: "
            "cache %.1fMB, %d bulk submission(s) at once",
            settings.database_path,
            products,
            settings.threadpool_size,
            settings.web_concurrency,
            settings.worker_cache_max_mb,
            settings.worker_bulk_concurrency,
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
    app.state.settings = settings
    app.state.memory = memory
    app.state.registry = registry
    app.state.profile = settings.memory_profile
    app.state.bulk = BulkService(settings.database_path, cache, settings.max_bulk_records)
    app.state.bulk_limiter = anyio.CapacityLimiter(settings.worker_bulk_concurrency)
    app.state.max_body_bytes = int(settings.max_body_mb * MB)
    secret = settings.admin_token
    app.state.admin_token = secret.get_secret_value().encode() if secret else None
    app.include_router(diagnostics.router)
    if app.state.admin_token is not None:  # else /debug and /admin answer 404 to every method
        app.include_router(diagnostics.admin_router)
    app.include_router(bulk_router)
    admission = bulk_admission(settings, memory) if settings.memory_admission else None
    # The admission gate sits inside the traffic counter; MEMORY_ADMISSION=0 (the baseline) also
    # leaves replies whole, as a plain service sends them.
    memory.install(app, admission, slice_replies=settings.memory_admission)
    if admission is not None:
        registry.register(EdgeCollector())
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)  # added last: outermost, sees every answer
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; bad configuration exits with one line per bad variable and status 2."""
    try:
        settings = settings or load_settings()
        configure_logging(settings.log_level)
        return build_app(settings)
    except ConfigError as exc:
        sys.stderr.write("\n".join(exc.lines) + "\n")
        raise SystemExit(2) from None
