"""The results store on PostgreSQL, when DATABASE_URL is set: shared by every worker of every
replica, and kept across redeploys.

psycopg 3 with a small pool per worker (POOL_MIN..POOL_MAX connections): the sync routes'
threads, the event loop's short reads and the cleanup hook take a connection per call and give it
back, so a slow client never holds one. Each connection is checked when it is handed out, so one
broken by a database restart is replaced there instead of failing a request.

Documents are stored uncompressed out of line (STORAGE EXTERNAL), so ``substring(document from
... for ...)`` reads only the TOAST chunks under a slice, and ``octet_length`` reads none: a
reader costs one slice, never a whole copy, on either side of the connection.

The first worker to start creates the schema and seeds the catalogue inside one transaction that
holds an advisory lock, so workers and replicas starting together neither race on CREATE TABLE
nor seed twice; the others wait for it and find the catalogue there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from app.workload.catalogue import PRODUCT_COUNT, ProductRow, seed_rows
from app.workload.store import Outage, Stored, Submission

log = logging.getLogger(__name__)

POOL_MIN = 1
POOL_MAX = 4  # per worker: PostgreSQL's default max_connections is 100
POOL_WAIT_SECONDS = 2.0  # for a free connection, or a new one, before the call is an outage
CONNECT_TIMEOUT_SECONDS = 3  # libpq's, per attempt
SEED_LOCK = 0x6C6D7331  # pg_advisory_xact_lock key: "lms1"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS products (
        sku text PRIMARY KEY,
        name text NOT NULL,
        category text NOT NULL,
        unit_weight_g integer NOT NULL,
        tax_rate double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS submissions (
        id text PRIMARY KEY,
        created_at double precision NOT NULL,
        path text NOT NULL,
        records integer NOT NULL,
        total_amount double precision NOT NULL,
        unknown_skus integer NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        id text PRIMARY KEY,
        expires_at double precision NOT NULL,
        document bytea NOT NULL
    )""",
    "ALTER TABLE results ALTER COLUMN document SET STORAGE EXTERNAL",
    "CREATE INDEX IF NOT EXISTS results_expires_at ON results (expires_at)",
)
# Errors that say the server cannot be reached or went away, as against a bad query.
UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


def describe_url(url: str) -> str:
    """host:port/database of a DATABASE_URL, for logs: never its user or password."""
    parts = urlsplit(url)
    return f"postgresql {parts.hostname}:{parts.port or 5432}{parts.path or '/'}"


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._description = describe_url(url)
        self.outage = Outage(self._description)
        self._ready = False
        self.pool = ConnectionPool(
            url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=POOL_WAIT_SECONDS,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            check=ConnectionPool.check_connection,
            name="results",
            open=False,  # no thread or connection until initialize(), in the worker's startup
        )

    @property
    def description(self) -> str:
        return self._description

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled connection, committed on return; an unreachable server is an outage."""
        self.outage.check()
        try:
            with self.pool.connection() as conn:
                if not self._ready:
                    self._setup(conn)
                yield conn
        except UNREACHABLE as exc:
            raise self.outage.failed(exc) from None
        self.outage.succeeded()

    def _setup(self, conn: psycopg.Connection[TupleRow]) -> int:
        """Schema and catalogue, once for all workers and replicas: see the module's doc."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEED_LOCK,))
            for statement in SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT count(*) FROM products").fetchone()
            count = int(row[0]) if row else 0
            if count == 0:
                with conn.cursor().copy("COPY products FROM STDIN") as copy:
                    for product in seed_rows():
                        copy.write_row(product)
                count = PRODUCT_COUNT
        self._ready = True
        return count

    def initialize(self) -> int:
        if self.pool.closed:
            self.pool.open(wait=False)  # connects in the background; calls wait for it
        self.outage.check()
        try:
            with self.pool.connection() as conn:
                return self._setup(conn)
        except UNREACHABLE as exc:
            raise self.outage.failed(exc) from None

    def products_by_sku(self, skus: Iterable[str]) -> dict[str, ProductRow]:
        wanted = sorted(set(skus))
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM products WHERE sku = ANY(%s)", (wanted,))
            return {row[0]: ProductRow(*row) for row in rows}

    def product(self, sku: str) -> ProductRow | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM products WHERE sku = %s", (sku,)).fetchone()
        return ProductRow(*row) if row else None

    def save(self, submission: Submission, document: bytes, expires_at: float) -> None:
        s = submission
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO submissions VALUES (%s, %s, %s, %s, %s, %s)",
                (s.id, s.created_at, s.path, s.records, s.total_amount, s.unknown_skus),
            )
            # %b: the document goes as binary, not hex text twice its size.
            conn.execute("INSERT INTO results VALUES (%s, %s, %b)", (s.id, expires_at, document))

    def find(self, result_id: str, now: float) -> Stored | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT r.expires_at, octet_length(r.document) FROM submissions s "
                "LEFT JOIN results r ON r.id = s.id WHERE s.id = %s",
                (result_id,),
            ).fetchone()
        return Stored.of_row(row, now)

    def read(self, result_id: str, offset: int, size: int) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT substring(document from %s for %s) FROM results WHERE id = %s",
                (offset + 1, size, result_id),
                binary=True,
            ).fetchone()
        if row is None or not isinstance(row[0], bytes):
            return None
        return row[0]

    def purge_expired(self, now: float) -> int:
        with self._connect() as conn:
            return conn.execute("DELETE FROM results WHERE expires_at <= %s", (now,)).rowcount

    def submission_count(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT count(*) FROM submissions").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.pool.close()
