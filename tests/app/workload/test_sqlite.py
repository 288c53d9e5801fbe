"""The SQLite catalogue: idempotent, deterministic seed, WAL, lookups, submissions."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.workload import catalogue, sqlite
from app.workload.sqlite import SqliteStore
from app.workload.store import Submission


def catalogue_digest(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM products ORDER BY sku").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_initialize_seeds_5000_products_once(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "db.sqlite"  # parent folders are created
    assert sqlite.initialize(path) == 5000
    assert sqlite.initialize(path) == 5000
    with sqlite.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM products").fetchone() == (5000,)
        skus = [row[0] for row in conn.execute("SELECT sku FROM products ORDER BY sku")]
    assert (skus[0], skus[-1]) == ("SKU-00000", "SKU-04999")


def test_seed_is_the_same_every_time(tmp_path: Path) -> None:
    sqlite.initialize(tmp_path / "a.sqlite")
    sqlite.initialize(tmp_path / "b.sqlite")
    assert catalogue_digest(tmp_path / "a.sqlite") == catalogue_digest(tmp_path / "b.sqlite")


def test_seeded_products_are_sensible(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    with sqlite.connect(path) as conn:
        rows = [catalogue.ProductRow(*row) for row in conn.execute("SELECT * FROM products")]
    assert {p.category for p in rows} == set(catalogue.CATEGORIES)
    assert all(20 <= p.unit_weight_g <= 5000 for p in rows)
    assert {p.tax_rate for p in rows} <= {0.0, 0.07, 0.19}
    assert len({p.tax_rate for p in rows}) == 3


def test_existing_rows_survive_initialize(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    SqliteStore(path).save(Submission("a" * 32, 1.0, "sync", 3, 9.5, 1), b"{}", 2.0)
    with sqlite.connect(path) as conn, conn:
        conn.execute("UPDATE products SET name = 'renamed' WHERE sku = 'SKU-00001'")
    sqlite.initialize(path)
    with sqlite.connect(path) as conn:
        assert sqlite.submission_count(conn) == 1
        product = sqlite.product(conn, "SKU-00001")
    assert product is not None and product.name == "renamed"


def test_connections_use_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    with sqlite.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_lookups(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    wanted = [catalogue.sku_for(i) for i in range(0, 5000, 7)] + ["SKU-99999", "SKU-00007"]
    with sqlite.connect(path) as conn:
        found = sqlite.products_by_sku(conn, iter(wanted))  # more than one chunk of params
        assert sqlite.product(conn, "SKU-00042") == found.get("SKU-00042")
        assert sqlite.product(conn, "SKU-99999") is None
    assert len(found) == len(range(0, 5000, 7))
    assert "SKU-99999" not in found
    assert all(sku == product.sku for sku, product in found.items())


def test_a_saved_submission_and_its_result_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    SqliteStore(path).save(Submission("f" * 32, 123.5, "async", 10, 99.99, 2), b"[1]", 423.5)
    with sqlite3.connect(path) as other:  # visible to another connection: committed
        row = other.execute("SELECT * FROM submissions").fetchone()
        result = other.execute("SELECT * FROM results").fetchone()
    assert row == ("f" * 32, 123.5, "async", 10, 99.99, 2)
    assert result == ("f" * 32, 423.5, b"[1]")


def test_two_workers_initializing_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both reach the seed step having counted 0: the window two fresh workers race through.
    seed = catalogue.seed_rows
    both_counted = threading.Barrier(2)

    def gated_seed() -> Iterator[catalogue.ProductRow]:
        # A broken barrier means the other worker never got here: initialize serialised it.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_counted.wait(timeout=2)
        yield from seed()

    monkeypatch.setattr(sqlite, "seed_rows", gated_seed)
    path = tmp_path / "db.sqlite"
    outcomes: list[object] = []

    def start() -> None:
        try:
            outcomes.append(sqlite.initialize(path))
        except Exception as exc:
            outcomes.append(exc)

    workers = [threading.Thread(target=start) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert outcomes == [5000, 5000]


def test_a_worker_starting_while_another_writes_a_fresh_file_waits_for_it(tmp_path: Path) -> None:
    # A fresh file is not yet in WAL mode; switching it needs the file to itself, and SQLite
    # refuses at once (no busy wait) while another worker holds a write, as when it seeds.
    path = tmp_path / "db.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE held (n INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO held VALUES (1)")
    done = threading.Timer(0.3, other.execute, ("COMMIT",))
    done.start()
    try:
        assert sqlite.initialize(path) == 5000
    finally:
        done.join()
        other.close()
    with sqlite3.connect(path) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
