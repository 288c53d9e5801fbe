"""The workload's SQLite database: a product catalogue to enrich records from, a row per
accepted submission and its stored result (app/workload/sqlite.py is the store on top).

WAL with synchronous=NORMAL: a commit survives the process being killed (the OS holds the log),
and readers never wait for the writer. Connections are short-lived, one per unit of work, so the
sync endpoints' worker threads never share one.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

PRODUCT_COUNT = 5000
CATEGORIES = ("books", "garden", "grocery", "hardware", "music", "office", "outdoor", "toys")
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


class Product(NamedTuple):
    sku: str
    name: str
    category: str
    unit_weight_g: int
    tax_rate: float


def sku_for(index: int) -> str:
    return f"SKU-{index:05d}"


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


def seed_rows() -> Iterator[Product]:
    rng = random.Random(20240601)  # the same catalogue on every machine
    for index in range(PRODUCT_COUNT):
        category = CATEGORIES[index % len(CATEGORIES)]
        yield Product(
            sku_for(index),
            f"{category.title()} item {index}",
            category,
            rng.randint(20, 5000),
            rng.choice((0.0, 0.07, 0.19)),
        )


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


def products_by_sku(conn: sqlite3.Connection, skus: Iterable[str]) -> dict[str, Product]:
    wanted = sorted(set(skus))
    found: dict[str, Product] = {}
    for start in range(0, len(wanted), SQLITE_MAX_PARAMS):
        chunk = wanted[start : start + SQLITE_MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM products WHERE sku IN ({marks})", chunk):
            found[row[0]] = Product(*row)
    return found


def product(conn: sqlite3.Connection, sku: str) -> Product | None:
    row = conn.execute("SELECT * FROM products WHERE sku = ?", (sku,)).fetchone()
    return Product(*row) if row else None


def submission_count(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT COUNT(*) FROM submissions").fetchone()
    return int(count)
