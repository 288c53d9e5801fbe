"""The results store on the service's SQLite file: the default, shared by one replica's workers.

Its schema, connections and catalogue reads are here too: the catalogue's rows come from
catalogue.py, which the PostgreSQL store seeds from as well.

WAL with synchronous=NORMAL: a commit survives the worker being killed, since the log is in
the OS's hands; readers never wait for the writer, and a writer waits its turn for up to the
busy timeout. A connection per call: the sync routes' threads, the event loop and the cleanup
hook's thread never share one, and opening a local file costs tens of microseconds.

A result is read back through an incremental blob handle, a slice at a time: SQLite reads the
pages under the slice, where ``substr(document, ...)`` would load the whole value for each one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.workload.catalogue import PRODUCT_COUNT, ProductRow, seed_rows
from app.workload.store import Outage, Stored, Submission

SQLITE_MAX_PARAMS = 500  # stay far below SQLITE_MAX_VARIABLE_NUMBER on old builds

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    unit_weight_g INTEGER NOT NULL,
    tax_rate REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    path TEXT NOT NULL,
    records INTEGER NOT NULL,
    total_amount REAL NOT NULL,
    unknown_skus INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    document BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expires_at ON results (expires_at);
"""


BUSY_TIMEOUT_SECONDS = 10.0


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        yield conn
    finally:
        conn.close()


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, once, at start-up: the mode belongs to the file, so connections
    opened later find it. The switch needs the file to itself, and SQLite answers "locked" at
    once instead of waiting out the busy timeout, as when another worker is seeding a fresh
    file; so it is tried again until that timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def initialize(path: str | Path) -> int:
    """Create the schema and seed the catalogue on first start; returns the product count."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as conn:
        _use_wal(conn)
        conn.executescript(SCHEMA)
        # Workers start together on a fresh file: the count and the seed are one write
        # transaction, so the second worker waits and then finds the catalogue seeded.
        conn.isolation_level = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            (count,) = conn.execute("SELECT COUNT(*) FROM products").fetchone()
            if count == 0:
                conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", seed_rows())
                count = PRODUCT_COUNT
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(count)


def products_by_sku(conn: sqlite3.Connection, skus: Iterable[str]) -> dict[str, ProductRow]:
    wanted = sorted(set(skus))
    found: dict[str, ProductRow] = {}
    for start in range(0, len(wanted), SQLITE_MAX_PARAMS):
        chunk = wanted[start : start + SQLITE_MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM products WHERE sku IN ({marks})", chunk):
            found[row[0]] = ProductRow(*row)
    return found


def product(conn: sqlite3.Connection, sku: str) -> ProductRow | None:
    row = conn.execute("SELECT * FROM products WHERE sku = ?", (sku,)).fetchone()
    return ProductRow(*row) if row else None


def submission_count(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT COUNT(*) FROM submissions").fetchone()
    return int(count)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.outage = Outage(f"sqlite {self.path}")

    @property
    def description(self) -> str:
        return f"sqlite {self.path}"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection; a file that cannot be opened, written or waited for is an outage."""
        self.outage.check()
        try:
            with connect(self.path) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise self.outage.failed(exc) from None
        self.outage.succeeded()

    def initialize(self) -> int:
        return initialize(self.path)

    def products_by_sku(self, skus: Iterable[str]) -> dict[str, ProductRow]:
        with self._connect() as conn:
            return products_by_sku(conn, skus)

    def product(self, sku: str) -> ProductRow | None:
        with self._connect() as conn:
            return product(conn, sku)

    def save(self, submission: Submission, document: bytes, expires_at: float) -> None:
        s = submission
        with self._connect() as conn, conn:  # one transaction: both rows or neither
            conn.execute(
                "INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?)",
                (s.id, s.created_at, s.path, s.records, s.total_amount, s.unknown_skus),
            )
            conn.execute("INSERT INTO results VALUES (?, ?, ?)", (s.id, expires_at, document))

    def find(self, result_id: str, now: float) -> Stored | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT r.expires_at, length(r.document) FROM submissions s "
                "LEFT JOIN results r ON r.id = s.id WHERE s.id = ?",
                (result_id,),
            ).fetchone()
        return Stored.of_row(row, now)

    def read(self, result_id: str, offset: int, size: int) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute("SELECT rowid FROM results WHERE id = ?", (result_id,)).fetchone()
            if row is None:
                return None
            with conn.blobopen("results", "document", row[0], readonly=True) as blob:
                blob.seek(offset)
                return blob.read(size)

    def purge_expired(self, now: float) -> int:
        with self._connect() as conn, conn:
            return conn.execute("DELETE FROM results WHERE expires_at <= ?", (now,)).rowcount

    def submission_count(self) -> int:
        with self._connect() as conn:
            return submission_count(conn)

    def close(self) -> None:
        """Nothing to close: connections live for one call."""
