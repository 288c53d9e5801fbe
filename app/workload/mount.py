"""The reference workload as one object app/main.py mounts: ``BulkWorkload().mount(frame)``.

Everything the bulk routes need comes in here and nowhere else: their settings, the store
(SQLite, or PostgreSQL with DATABASE_URL; its schema and catalogue made at startup), the hot
copies of recent results, the cleanup hook that deletes expired results, metrics and the
/debug/memory section, the limiter on concurrent submissions, what a submission costs for
admission control, and the 503 for a database that is down; and, for the verifier, the load
that drives it (app/workload/load). Delete app/workload and its line in app/main.py and the
service runs on without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

import anyio
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.config import load
from app.frame import Frame
from app.load import WorkloadLoad
from app.memory.measure import MB
from app.workload.bulk import BulkService
from app.workload.cache import BulkCache
from app.workload.load import LOAD
from app.workload.routes import ADMITTED_ROUTES, Bulk, router, store_unavailable
from app.workload.settings import BulkSettings
from app.workload.store import Store, StoreUnavailable, open_store

log = logging.getLogger(__name__)


class CacheCollector(Collector):
    def __init__(self, cache: BulkCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.cache.stats()
        yield GaugeMetricFamily("bulk_cache_entries", "Results in the bulk cache.", stats.entries)
        yield GaugeMetricFamily("bulk_cache_bytes", "Bytes held by the bulk cache.", stats.bytes)


def cache_status(cache: BulkCache, store: Store) -> Mapping[str, object]:
    """The cache's section of /debug/memory: the hot copies held here, and the store behind."""
    stats = cache.stats()
    return {
        "entries": stats.entries,
        "bytes": stats.bytes,
        "ttl_seconds": cache.ttl,
        "evictions": stats.evictions,  # hot copies dropped for the bounds: still in the store
        "expirations": stats.expirations,
        "store": store.description,
    }


class BulkWorkload:
    """The bulk routes; ``settings`` None reads BULK_*, CACHE_*, ... from the environment."""

    settings_type = BulkSettings
    load: WorkloadLoad = LOAD  # its Locust users and heavy requests, for the verifier

    def __init__(self, settings: BulkSettings | None = None) -> None:
        self.settings = settings

    def mount(self, frame: Frame) -> None:
        settings = self.settings or load(BulkSettings)
        workers = frame.settings.web_concurrency
        cache_bytes = int(settings.worker_cache_max_mb(workers) * MB)
        cache = BulkCache(settings.cache_ttl_seconds, settings.cache_max_entries, cache_bytes)
        url = settings.database_url.get_secret_value() if settings.database_url else None
        # Made here, before the start RSS is measured: the driver it loads is part of it.
        store = open_store(url, settings.database_path)
        service = BulkService(store, cache, settings.max_bulk_records)
        frame.memory.add_cleanup_hook(service.purge_expired, expires_at=service.all_expired_at)
        frame.registry.register(CacheCollector(cache))
        frame.add_status("cache", lambda: cache_status(cache, store))
        frame.hold(cache_bytes, "CACHE_MAX_MB")
        frame.admit(
            ADMITTED_ROUTES, max_body_bytes=settings.max_body_bytes, limit_name="MAX_BODY_MB"
        )
        concurrency = settings.worker_bulk_concurrency(workers)
        frame.app.state.bulk = Bulk(
            service, anyio.CapacityLimiter(concurrency), settings.max_body_bytes
        )
        frame.app.include_router(router)
        frame.app.add_exception_handler(StoreUnavailable, store_unavailable)

        async def open_database() -> None:
            try:
                products = await asyncio.to_thread(store.initialize)
            except StoreUnavailable:
                # Logged by the store; it sets itself up on the first call that reaches it.
                products = 0
            log.info(
                "[bulk] store %s %s (%d products); results kept %gs; this worker's share of "
                "%d: hot copies %.1fMB, %d bulk submission(s) at once",
                store.description,
                "ready" if products else "unreachable for now",
                products,
                settings.cache_ttl_seconds,
                workers,
                cache_bytes / MB,
                concurrency,
            )

        frame.on_startup(open_database)
