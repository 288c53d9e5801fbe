"""Where acknowledged results live: the service's database, not a worker's heap.

A result promised by a 201 must be readable from any worker and any replica until it expires,
and must outlive the worker that made it (an OOM kill, a LIMIT_MAX_REQUESTS recycle, a
redeploy). So it is written to the database before the 201, and read back from there.

Two stores behind one small interface: the SQLite file the service always had (the default: the
workers of one replica share it, `make run` needs no server), and PostgreSQL when DATABASE_URL is
set (every replica shares it; Railway's Postgres service injects the variable). Everything the
workload asks of its database goes through ``Store``, so the routes never know which it is.

A database that cannot be reached is an outage, not a bug: the store raises
``StoreUnavailable``, the routes answer 503 with Retry-After, and ``Outage`` logs one line when
it starts and one when it ends, however many requests it refused in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from app.workload.catalogue import ProductRow

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5  # told to clients refused during an outage, and how long it lasts here
OUTAGE_LOG_SECONDS = 60.0  # while down, a reminder line at most this often


class StoreUnavailable(Exception):
    """The database cannot be reached now; the request may be retried after ``retry_after``."""

    def __init__(self, detail: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class Submission:
    """The summary row of an accepted submission, written with its result."""

    id: str
    created_at: float  # time.time(): replicas share the store, so the clock is the wall's
    path: str
    records: int
    total_amount: float
    unknown_skus: int


@dataclass(frozen=True)
class Stored:
    """What the store knows of a result id it was given."""

    length: int  # bytes of its document; 0 once expired
    expired: bool  # past its expiry, or already deleted by the cleanup hook

    @classmethod
    def of_row(cls, row: tuple[float | None, int | None] | None, now: float) -> Stored | None:
        """From (expires_at, document length) of the submission joined to its result: None for
        an id never stored; expired when its result is past due or already deleted."""
        if row is None:
            return None
        expires_at, length = row
        if expires_at is None or expires_at <= now or length is None:
            return cls(0, expired=True)
        return cls(int(length), expired=False)


class Store(Protocol):
    """The workload's database: the catalogue, and each submission's row and result."""

    @property
    def description(self) -> str:
        """For the start line: the SQLite path, or the PostgreSQL host and database (never a
        password)."""
        ...


    def initialize(self) -> int:
        """Create the schema and seed the catalogue once, however many workers or replicas
        start at the same moment; returns the product count."""
        ...

    def products_by_sku(self, skus: Iterable[str]) -> dict[str, ProductRow]: ...

    def product(self, sku: str) -> ProductRow | None: ...

    def save(self, submission: Submission, document: bytes, expires_at: float) -> None:
        """Write the summary row and the result in one transaction; returns once committed."""
        ...

    def find(self, result_id: str, now: float) -> Stored | None:
        """The result's length, or that it expired; None for an id never stored."""
        ...

    def read(self, result_id: str, offset: int, size: int) -> bytes | None:
        """``size`` bytes of the document from ``offset`` (0-based), read anew; None once the
        result is gone. No reader holds the whole document."""
        ...

    def purge_expired(self, now: float) -> int:
        """Delete the results expired at ``now`` (wall clock); returns how many went."""
        ...

    def submission_count(self) -> int: ...

    def close(self) -> None: ...


class Outage:
    """Whether the database is down, so requests fail at once instead of each waiting out a
    connect timeout, and the log gets a line per outage instead of a traceback per request.

    After a failure, calls fail fast for RETRY_AFTER_SECONDS; the first call after that tries the
    database again, and its success ends the outage.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._logged_at = 0.0
        self.refused = 0  # requests refused during outages, since the start
        self.outages = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def check(self) -> None:
        """Raise StoreUnavailable while the last failure is recent; else let the call try."""
        with self._lock:
            if self._down_since is None or self._clock() >= self._retry_at:
                return
            self.refused += 1
            if self._clock() - self._logged_at >= OUTAGE_LOG_SECONDS:
                self._logged_at = self._clock()
                log.warning(
                    "[bulk] database %s still unreachable after %.0fs; %d request(s) refused "
                    "with 503",
                    self.name, self._clock() - self._down_since, self.refused,
                )
        raise StoreUnavailable(f"database {self.name} unreachable")

    def failed(self, exc: BaseException) -> StoreUnavailable:
        """Record a failed call; the error to raise in its place."""
        with self._lock:
            now = self._clock()
            self.refused += 1
            self._retry_at = now + RETRY_AFTER_SECONDS
            if self._down_since is None:
                self._down_since = now
                self._logged_at = now
                self.outages += 1
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.error(
                    "[bulk] database %s unreachable (%s: %s); routes that need it answer 503 "
                    "with Retry-After %ds",
                    self.name, type(exc).__name__, reason[:200], RETRY_AFTER_SECONDS,
                )
        return StoreUnavailable(f"database {self.name} unreachable")

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            log.warning(
                "[bulk] database %s reachable again after %.1fs",
                self.name, self._clock() - self._down_since,
            )
            self._down_since = None


def open_store(database_url: str | None, database_path: str) -> Store:
    """PostgreSQL when DATABASE_URL is set, else the SQLite file at DATABASE_PATH."""
    if database_url:
        from app.workload.postgres import PostgresStore  # the driver loads only when used

        return PostgresStore(database_url)
    from app.workload.sqlite import SqliteStore

    return SqliteStore(database_path)
