"""The catalogue's database: a SQLite file of products behind a small pool of connections, as a
service reads PostgreSQL through a driver's pool. Each query turns rows into dicts, so one
request makes thousands of small Python objects, the kind pymalloc keeps in its 1 MiB arenas."""

from __future__ import annotations

import queue
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Product = dict[str, Any]

CATEGORIES = 50
COLUMNS = "id, sku, name, category, price_cents, stock, colour, description"
SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    category INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    stock INTEGER NOT NULL,
    colour TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS products_category ON products (category, id);
"""
COLOURS = ("red", "green", "blue", "black", "white", "grey", "yellow", "orange")


def seed(path: Path, count: int) -> None:
    """Writes ``count`` products once (seeded, so every run serves the same catalogue); an
    existing file that already holds them is left as it is."""
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        if db.execute("SELECT count(*) FROM products").fetchone()[0] >= count:
            return
        rng = random.Random(20261201)
        db.executemany(
            f"INSERT OR REPLACE INTO products ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i, f"SKU-{i:06d}", f"Product {i}", i % CATEGORIES, rng.randint(100, 99_999),
                 rng.randint(0, 500), rng.choice(COLOURS), f"A {rng.choice(COLOURS)} thing, "
                 f"model {rng.randint(1, 9999)}, for everyday use")
                for i in range(count)
            ),
        )  # fmt: skip


def as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Product:
    """A row as a dict of its columns: what a driver's dict-row factory gives an application."""
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class Pool:
    """A fixed set of connections shared by the threadpool's threads, one borrower at a time,
    opened at start and kept for the service's life, as a driver's pool keeps them."""

    def __init__(self, path: Path, size: int) -> None:
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        for _ in range(size):
            connection = sqlite3.connect(path, check_same_thread=False)
            connection.row_factory = as_dict
            self._idle.put(connection)
        self.size = size

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        connection = self._idle.get()
        try:
            yield connection
        finally:
            self._idle.put(connection)

    def close(self) -> None:
        for _ in range(self.size):
            self._idle.get().close()


def page(pool: Pool, category: int, offset: int, limit: int) -> list[Product]:
    with pool.connection() as db:
        cursor = db.execute(
            f"SELECT {COLUMNS} FROM products WHERE category = ? ORDER BY id LIMIT ? OFFSET ?",
            (category, limit, offset),
        )
        return cursor.fetchall()


def one(pool: Pool, product_id: int) -> Product | None:
    with pool.connection() as db:
        found: Product | None = db.execute(
            f"SELECT {COLUMNS} FROM products WHERE id = ?", (product_id,)
        ).fetchone()
        return found
