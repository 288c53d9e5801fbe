"""Both results stores, the SQLite file and a real PostgreSQL server, held to one contract."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.workload import catalogue, store
from app.workload.bulk import BulkService
from app.workload.cache import BulkCache
from app.workload.postgres import PostgresStore, describe_url
from app.workload.sqlite import SqliteStore
from app.workload.store import Outage, Store, StoreUnavailable, Submission, open_store
from tests.app.workload.records import body, record

KINDS = ["sqlite", "postgres"]


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return open_store(None, str(tmp_path / "service.db"))
    return open_store(request.getfixturevalue("postgres_url"), "unused")


@pytest.fixture(params=KINDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each kind, not yet initialized."""
    made = make_store(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture
def ready(fresh: Store) -> Store:
    fresh.initialize()
    return fresh


def submission(result_id: str, created_at: float = 1000.0) -> Submission:
    return Submission(result_id, created_at, "sync", 3, 12.5, 1)


def document(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_open_store_picks_postgres_only_for_a_url(tmp_path: Path) -> None:
    assert isinstance(open_store(None, str(tmp_path / "a.db")), SqliteStore)
    assert isinstance(open_store("", str(tmp_path / "a.db")), SqliteStore)


def test_the_description_names_host_and_database_never_the_password() -> None:
    url = "postgresql://user:s3cret@postgres.railway.internal:5432/railway"
    assert describe_url(url) == "postgresql postgres.railway.internal:5432/railway"
    assert "5432" in describe_url("postgres://u@db/app") and "u@" not in describe_url(url)


def test_the_catalogue_is_seeded_once_and_is_the_same_in_both(
    fresh: Store, tmp_path: Path
) -> None:
    assert fresh.initialize() == catalogue.PRODUCT_COUNT
    assert fresh.initialize() == catalogue.PRODUCT_COUNT
    skus = [catalogue.sku_for(i) for i in range(catalogue.PRODUCT_COUNT)]
    reference = SqliteStore(tmp_path / "reference.db")
    reference.initialize()
    assert fresh.products_by_sku(skus) == reference.products_by_sku(skus)
    assert fresh.product("SKU-00042") == reference.product("SKU-00042")
    assert fresh.product("SKU-99999") is None


def test_workers_initializing_together_seed_once(fresh: Store) -> None:
    """As many workers (or replicas) starting at the same moment, each with its own store."""
    others = [type(fresh)(getattr(fresh, "path", None) or fresh.url) for _ in range(3)]  # type: ignore[attr-defined]
    outcomes: list[object] = []
    start = threading.Barrier(len(others))

    def initialize(each: Store) -> None:
        start.wait(timeout=10)
        try:
            outcomes.append(each.initialize())
        except Exception as exc:  # a race would show here
            outcomes.append(exc)

    threads = [threading.Thread(target=initialize, args=(each,)) for each in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for each in others:
        each.close()
    assert outcomes == [catalogue.PRODUCT_COUNT] * len(others)
    fresh.initialize()
    assert len(fresh.products_by_sku(catalogue.sku_for(i) for i in range(6000))) == 5000


def test_a_saved_result_is_found_and_read_back_a_slice_at_a_time(ready: Store) -> None:
    value = document(200_000)
    ready.save(submission("a" * 32), value, expires_at=2000.0)
    found = ready.find("a" * 32, now=1500.0)
    assert found is not None and (found.length, found.expired) == (len(value), False)
    pieces = [ready.read("a" * 32, offset, 65536) for offset in range(0, len(value), 65536)]
    assert [len(p or b"") for p in pieces] == [65536, 65536, 65536, len(value) - 3 * 65536]
    assert b"".join(p or b"" for p in pieces) == value
    assert ready.read("a" * 32, len(value), 10) == b""
    assert ready.submission_count() == 1


def test_an_unknown_id_is_none_and_reads_nothing(ready: Store) -> None:
    assert ready.find("b" * 32, now=0.0) is None
    assert ready.read("b" * 32, 0, 100) is None


def test_expiry_is_reported_then_the_cleanup_deletes_only_the_expired(ready: Store) -> None:
    ready.save(submission("a" * 32), b"old", expires_at=2000.0)
    ready.save(submission("c" * 32), b"new", expires_at=4000.0)
    found = ready.find("a" * 32, now=2000.0)
    assert found is not None and found.expired  # due: expired, though not deleted yet
    assert ready.read("a" * 32, 0, 3) == b"old"  # a reply already started may finish
    assert ready.purge_expired(now=2500.0) == 1
    assert ready.purge_expired(now=2500.0) == 0
    gone = ready.find("a" * 32, now=2500.0)
    assert gone is not None and gone.expired  # its summary row still says so
    assert ready.read("a" * 32, 0, 3) is None
    assert ready.read("c" * 32, 0, 3) == b"new"


def test_a_failed_save_keeps_neither_row(ready: Store) -> None:
    ready.save(submission("a" * 32), b"first", expires_at=2000.0)
    with pytest.raises(Exception):  # noqa: B017  # the driver's own integrity error
        ready.save(submission("a" * 32), b"second", expires_at=3000.0)
    assert ready.submission_count() == 1
    assert ready.read("a" * 32, 0, 10) == b"first"


def test_an_outage_fails_fast_logs_once_and_ends_on_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage("db", clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        error = outage.failed(OSError("connection refused"))
        assert isinstance(error, StoreUnavailable) and error.retry_after > 0
        for _ in range(50):
            with pytest.raises(StoreUnavailable):
                outage.check()  # inside the window: no attempt, no line
        now[0] += store.RETRY_AFTER_SECONDS
        outage.check()  # the window passed: this call may try the database
        outage.succeeded()
        outage.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0] and "connection refused" in lines[0]
    assert "reachable again after 5.0s" in lines[1]
    assert outage.refused == 51 and not outage.down


def test_postgres_down_is_unavailable_then_back(
    postgres_cluster: object, postgres_url: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = postgres_cluster
    made = PostgresStore(postgres_url)
    made.initialize()
    made.save(submission("a" * 32), b"kept", expires_at=time.time() + 60)
    monkeypatch.setattr(store, "RETRY_AFTER_SECONDS", 0)  # every call tries the server
    cluster.stop()  # type: ignore[attr-defined]
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with pytest.raises(StoreUnavailable):
                    made.find("a" * 32, time.time())
    finally:
        cluster.start()  # type: ignore[attr-defined]
    assert made.read("a" * 32, 0, 10) == b"kept"  # committed before the stop
    made.close()
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1 and down[0].exc_info is None


def test_the_async_path_runs_every_store_call_off_the_loop(ready: Store) -> None:
    """A round trip to PostgreSQL (or a wait for it), or a SQLite write of a large result (or a
    wait for another worker's lock), must not hold the event loop."""
    service = BulkService(ready, BulkCache(300, 16, 16 * 2**20), max_records=50)
    threads: list[threading.Thread] = []
    for name in ("products_by_sku", "save"):
        real = getattr(ready, name)

        def recorded(*args: object, _real: Any = real) -> Any:
            threads.append(threading.current_thread())
            return _real(*args)

        setattr(ready, name, recorded)

    async def submit() -> tuple[threading.Thread, str]:
        summary = await service.submit_async(body(record(), record(sku="SKU-00002")), "async")
        return threading.current_thread(), summary.id

    loop_thread, result = asyncio.run(submit())
    assert len(threads) == 2  # one catalogue lookup, one save
    off_loop = [thread is not loop_thread for thread in threads]
    assert off_loop == [True, True]
    assert service.result(result) is not None
