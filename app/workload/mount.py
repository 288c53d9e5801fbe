"""The reference workload as one object app/main.py mounts: ``BulkWorkload().mount(frame)``.

Everything the bulk routes need comes in here and nowhere else: their settings, the SQLite
catalogue (created at startup), the results cache with its cleanup hook, metrics and
/debug/memory section, the limiter on concurrent submissions, and what a submission costs for
admission control. Delete app/workload and its line in app/main.py and the service runs on
without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping

import anyio
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.config import MB, load
from app.frame import Frame
from app.workload import database
from app.workload.bulk import BulkService
from app.workload.cache import BulkCache
from app.workload.routes import GUARDED_ROUTES, Bulk, router
from app.workload.settings import BulkSettings

log = logging.getLogger(__name__)


class CacheCollector(Collector):
    def __init__(self, cache: BulkCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.cache.stats()
        yield GaugeMetricFamily("bulk_cache_entries", "Results in the bulk cache.", stats.entries)
        yield GaugeMetricFamily("bulk_cache_bytes", "Bytes held by the bulk cache.", stats.bytes)


def cache_status(cache: BulkCache) -> Mapping[str, object]:
    """The cache's section of /debug/memory."""
    stats = cache.stats()
    return {
        "entries": stats.entries,
        "bytes": stats.bytes,
        "ttl_seconds": cache.ttl,
        "evictions": stats.evictions,  # dropped by the entry or byte bound before their TTL
        "expirations": stats.expirations,
    }


class BulkWorkload:
    """The bulk routes; ``settings`` None reads BULK_*, CACHE_*, ... from the environment."""

    settings_type = BulkSettings

    def __init__(self, settings: BulkSettings | None = None) -> None:
        self.settings = settings

    def mount(self, frame: Frame) -> None:
        settings = self.settings or load(BulkSettings)
        workers = frame.settings.web_concurrency
        cache_bytes = int(settings.worker_cache_max_mb(workers) * MB)
        cache = BulkCache(settings.cache_ttl_seconds, settings.cache_max_entries, cache_bytes)
        frame.memory.add_cleanup_hook(cache.purge_expired, expires_at=cache.all_expired_at)
        frame.registry.register(CacheCollector(cache))
        frame.add_status("cache", lambda: cache_status(cache))
        frame.hold(cache_bytes, "CACHE_MAX_MB")
        frame.guard(
            GUARDED_ROUTES, max_body_bytes=settings.max_body_bytes, limit_name="MAX_BODY_MB"
        )
        concurrency = settings.worker_bulk_concurrency(workers)
        frame.app.state.bulk = Bulk(
            BulkService(settings.database_path, cache, settings.max_bulk_records),
            anyio.CapacityLimiter(concurrency),
            settings.max_body_bytes,
        )
        frame.app.include_router(router)

        async def open_database() -> None:
            products = await asyncio.to_thread(database.initialize, settings.database_path)
            log.info(
                "[bulk] database %s ready (%d products); this worker's share of %d: "
                "cache %.1fMB, %d bulk submission(s) at once",
                settings.database_path,
                products,
                workers,
                cache_bytes / MB,
                concurrency,
            )

        frame.on_startup(open_database)
