"""The reference workload's settings: its own variables, split between workers."""

from __future__ import annotations

import pytest

from app.config import load
from app.workload.settings import BulkSettings


def test_defaults() -> None:
    settings = load(BulkSettings)
    assert settings.database_path == "data/service.db"
    assert (settings.cache_ttl_seconds, settings.cache_max_entries) == (300, 256)
    assert settings.cache_max_mb == 64
    assert (settings.max_bulk_records, settings.max_body_mb) == (20000, 8)
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert settings.bulk_concurrency == 2


def test_good_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "DATABASE_PATH": "/var/lib/service/x.db",
        "CACHE_MAX_ENTRIES": "7",
        "MAX_BULK_RECORDS": "10",
        "BULK_CONCURRENCY": "6",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load(BulkSettings)
    assert settings.database_path == "/var/lib/service/x.db"
    assert (settings.cache_max_entries, settings.max_bulk_records) == (7, 10)
    assert (settings.bulk_concurrency, settings.worker_bulk_concurrency(3)) == (6, 2)


@pytest.mark.parametrize(
    ("workers", "cache_mb", "bulk"), [(1, 64.0, 2), (2, 32.0, 1), (3, 64 / 3, 1)]
)
def test_workers_split_the_service_wide_budgets(workers: int, cache_mb: float, bulk: int) -> None:
    settings = load(BulkSettings)
    assert settings.worker_cache_max_mb(workers) == pytest.approx(cache_mb)
    assert settings.worker_bulk_concurrency(workers) == bulk
