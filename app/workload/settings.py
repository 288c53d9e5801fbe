"""The reference workload's settings: its own variables, read the way the frame reads its own
(environment and `.env`, one line per bad variable, exit 2), and gone with the workload.

CACHE_MAX_MB and BULK_CONCURRENCY are for the whole service: each of WEB_CONCURRENCY workers
takes its share, so N workers do not hold N full caches or run N times the submissions.

DATABASE_URL (set by Railway's Postgres service) moves the results and the catalogue to
PostgreSQL; unset, they live in the SQLite file at DATABASE_PATH. A URL that cannot be a
PostgreSQL address stops startup here, not at the first request.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from app.config import SETTINGS_CONFIG
from app.memory.measure import MB


class BulkSettings(BaseSettings):
    model_config = SETTINGS_CONFIG
    # A variable starting with one of these that is no setting is warned about (a typo).
    ENV_PREFIXES: ClassVar[tuple[str, ...]] = ("CACHE_", "BULK_")

    database_path: str = "data/service.db"
    database_url: SecretStr | None = None  # postgresql://user:password@host:port/database
    cache_ttl_seconds: float = Field(300.0, gt=0)
    cache_max_entries: int = Field(256, ge=1)
    cache_max_mb: float = Field(64.0, gt=0)  # for the whole service: workers split it
    max_bulk_records: int = Field(20000, ge=1, le=1_000_000)
    max_body_mb: float = Field(8.0, gt=0, le=1024)
    bulk_concurrency: int = Field(2, ge=1, le=1000)  # for the whole service: workers split it

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            return value
        return check_database_url(value)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MB)

    def worker_cache_max_mb(self, workers: int) -> float:
        """Each worker's share of CACHE_MAX_MB."""
        return self.cache_max_mb / workers

    def worker_bulk_concurrency(self, workers: int) -> int:
        """Each worker's share of BULK_CONCURRENCY, at least one."""
        return max(1, self.bulk_concurrency // workers)


def check_database_url(url: str) -> str:
    """A PostgreSQL URL libpq will take, or ValueError saying what is wrong with it (never
    repeating the password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("must start postgresql:// (or postgres://)")
    if not parts.hostname:
        raise ValueError("names no host: postgresql://user:password@host:5432/database")
    if parts.path.strip("/") == "":
        raise ValueError("names no database: postgresql://user:password@host:5432/database")
    from psycopg.conninfo import conninfo_to_dict  # the driver's own parser: options too

    try:
        conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError, worded by libpq
        raise ValueError(f"libpq refuses it: {' '.join(str(exc).split())}") from None
    return url
