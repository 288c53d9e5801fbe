"""The results store on the service's SQLite file: the default, shared by one replica's workers.

WAL with synchronous=NORMAL (app/workload/database.py): a commit survives the worker being
killed, since the log is in the OS's hands; readers never wait for the writer, and a writer
waits its turn for up to the busy timeout. A connection per call: the sync routes' threads, the
event loop and the cleanup hook's thread never share one, and opening a local file costs tens
of microseconds.

A result is read back through an incremental blob handle, a slice at a time: SQLite reads the
pages under the slice, where ``substr(document, ...)`` would load the whole value for each one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.workload import database
from app.workload.database import Product
from app.workload.store import Outage, Stored, Submission


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
            with database.connect(self.path) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise self.outage.failed(exc) from None
        self.outage.succeeded()

    def initialize(self) -> int:
        return database.initialize(self.path)

    def products_by_sku(self, skus: Iterable[str]) -> dict[str, Product]:
        with self._connect() as conn:
            return database.products_by_sku(conn, skus)

    def product(self, sku: str) -> Product | None:
        with self._connect() as conn:
            return database.product(conn, sku)

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
            return database.submission_count(conn)

    def close(self) -> None:
        """Nothing to close: connections live for one call."""
