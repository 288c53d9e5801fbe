"""The bulk submission: strict parsing, bounds, bounded errors, slices, the stored document."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.workload import sqlite
from app.workload.bulk import (
    MAX_ERRORS,
    SLICE_RECORDS,
    WHOLE,
    BulkService,
    InvalidBulk,
    TooManyRecords,
)
from app.workload.cache import BulkCache
from app.workload.load import payloads
from app.workload.models import bulk_request_model
from app.workload.sqlite import SqliteStore
from tests.app.workload.records import body, record

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def service(tmp_path: Path) -> BulkService:
    path = tmp_path / "db.sqlite"
    sqlite.initialize(path)
    return BulkService(SqliteStore(path), BulkCache(300, 16, 16 * MB), max_records=5)


def error_types(info: pytest.ExceptionInfo[InvalidBulk]) -> set[str]:
    return {e["type"] for e in info.value.errors}


def test_parse_accepts_the_documented_record(service: BulkService) -> None:
    (parsed,) = service.parse(body(record()))
    assert (parsed.sku, parsed.quantity, parsed.unit_price) == ("SKU-00042", 3, 9.99)
    assert (parsed.customer, parsed.tags, parsed.note) == ("c-17", ["promo"], "free text")
    (minimal,) = service.parse(
        body({"sku": "SKU-00001", "quantity": 1, "unit_price": 0, "customer": "c"})
    )
    assert (minimal.tags, minimal.note, minimal.unit_price) == ([], "", 0.0)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("quantity", "3", "int_type"),
        ("quantity", True, "int_type"),
        ("quantity", 3.5, "int_type"),
        ("unit_price", "9.99", "float_type"),
        ("customer", 17, "string_type"),
        ("tags", "promo", "list_type"),
    ],
)
def test_types_are_strict(service: BulkService, field: str, value: Any, error: str) -> None:
    with pytest.raises(InvalidBulk) as info:
        service.parse(body(record(**{field: value})))
    assert error in error_types(info)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"sku": "SKU-42"}, "string_pattern_mismatch"),
        ({"sku": "sku-00042"}, "string_pattern_mismatch"),
        ({"sku": "SKU-000420"}, "string_pattern_mismatch"),
        ({"quantity": 0}, "greater_than_equal"),
        ({"quantity": 10_001}, "less_than_equal"),
        ({"unit_price": -0.01}, "greater_than_equal"),
        ({"unit_price": 1_000_000.01}, "less_than_equal"),
        ({"customer": ""}, "string_too_short"),
        ({"customer": "c" * 65}, "string_too_long"),
        ({"tags": ["t"] * 9}, "too_long"),
        ({"tags": ["t" * 33]}, "string_too_long"),
        ({"note": "n" * 513}, "string_too_long"),
    ],
)
def test_bounds(service: BulkService, overrides: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidBulk) as info:
        service.parse(body(record(**overrides)))
    assert error in error_types(info)


def test_extra_fields_are_refused(service: BulkService) -> None:
    with pytest.raises(InvalidBulk) as info:
        service.parse(body(record(discount=5)))
    assert "extra_forbidden" in error_types(info)
    with pytest.raises(InvalidBulk) as info:
        service.parse(body(record(), dry_run=True))
    assert "extra_forbidden" in error_types(info)


def test_missing_field_and_empty_list_are_invalid(service: BulkService) -> None:
    incomplete = record()
    del incomplete["customer"]
    with pytest.raises(InvalidBulk):
        service.parse(body(incomplete))
    with pytest.raises(InvalidBulk) as info:
        service.parse(body())
    assert "too_short" in error_types(info)


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b'{"records": [1, 2]', b"\xff\xfe"])
def test_malformed_json_is_invalid(service: BulkService, text: bytes) -> None:
    with pytest.raises(InvalidBulk):
        service.parse(text)


def test_record_count_bound(service: BulkService) -> None:
    assert len(service.parse(body(*[record()] * 5))) == 5
    with pytest.raises(TooManyRecords, match="more than 5 records"):
        service.parse(body(*[record()] * 6))


def test_submit_enriches_aggregates_and_stores(service: BulkService) -> None:
    records = [
        record(sku="SKU-00001", quantity=2, unit_price=10.0),
        record(sku="SKU-00009", quantity=1, unit_price=5.5),  # same category as SKU-00001
        record(sku="SKU-00002", quantity=4, unit_price=1.25, tags=[]),
        record(sku="SKU-09999", quantity=7, unit_price=3.0),  # not in the catalogue
        record(sku="SKU-09998", quantity=1, unit_price=1.0),
    ]
    with sqlite3.connect(service.store.path) as conn:
        catalogue = {
            row[0]: row for row in conn.execute("SELECT sku, category, tax_rate FROM products")
        }
    summary = service.submit(body(*records), "sync")
    assert summary.records == 5
    assert summary.unknown_skus == 2
    expected: dict[str, float] = {}
    for r in records:
        _, category, tax = catalogue.get(r["sku"], (None, "unknown", 0.0))
        net = round(r["quantity"] * r["unit_price"], 2)
        expected[category] = expected.get(category, 0.0) + round(net + round(net * tax, 2), 2)
    assert set(summary.by_category) == set(expected)
    for category, gross in expected.items():
        assert summary.by_category[category].gross == pytest.approx(gross)
    assert summary.by_category["unknown"].records == 2
    assert summary.by_category["unknown"].quantity == 8
    assert summary.total_amount == pytest.approx(sum(expected.values()))

    document = json.loads(service.result(summary.id) or b"null")
    assert document["id"] == summary.id
    assert document["path"] == "sync"
    assert document["total_amount"] == summary.total_amount
    assert [line["sku"] for line in document["lines"]] == [r["sku"] for r in records]
    known, unknown = document["lines"][0], document["lines"][3]
    assert known["name"] and known["weight_g"] > 0 and known["net"] == 20.0
    assert (unknown["name"], unknown["category"], unknown["weight_g"]) == (None, "unknown", None)
    assert unknown["gross"] == 21.0  # no tax on an unknown product


def test_submit_writes_one_summary_row(service: BulkService) -> None:
    summary = service.submit(body(record(), record(sku="SKU-07777")), "async")
    with sqlite3.connect(service.store.path) as conn:
        rows = conn.execute(
            "SELECT id, path, records, total_amount, unknown_skus FROM submissions"
        ).fetchall()
    assert rows == [(summary.id, "async", 2, summary.total_amount, 1)]


def test_invalid_submit_stores_nothing(service: BulkService) -> None:
    with pytest.raises(InvalidBulk):
        service.submit(body(record(quantity="3")), "sync")
    with pytest.raises(TooManyRecords):
        service.submit(body(*[record()] * 6), "sync")
    with sqlite3.connect(service.store.path) as conn:
        assert sqlite.submission_count(conn) == 0
    assert service.cache.stats().entries == 0


def test_each_submission_gets_its_own_id(service: BulkService) -> None:
    ids = {service.submit(body(record()), "sync").id for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_request_strings_are_not_kept_in_a_process_wide_cache(service: BulkService) -> None:
    # Parsed twice, equal values must be distinct objects: a cached string would outlive the
    # request and pin the pymalloc arena it sits in.
    payload = body(record(customer="customer-xyz-1", note="a short note"))
    first, second = service.parse(payload)[0], service.parse(payload)[0]
    assert first.customer == second.customer
    assert first.customer is not second.customer
    assert first.note is not second.note


# The digests of documents the line-at-a-time writer stored before slicing existed (loadtest
# bodies of 1, 7 and 2,500 records, id = uuid int n, created_at 1764547200.25).
DOCUMENTS_BEFORE_SLICING = {
    1: "3451fcc50b26b997355603c7acdbb8dbb775977b1294211436ff8114bc560e8c",
    7: "94bef575b0936c4c76c6d8f5d6131d2ef1ffb2a339d24c5b9e808d47ee660bfe",
    2500: "eb8dc2682c9d17cc7d56e07f293f031461e26af1e63d570654d42514efe1b9fe",
}


def sliced(service: BulkService, slice_records: int, max_records: int = 50) -> BulkService:
    return BulkService(service.store, service.cache, max_records, slice_records)


@pytest.mark.parametrize("slice_records", [WHOLE, 1, 3, SLICE_RECORDS])
@pytest.mark.parametrize("records", sorted(DOCUMENTS_BEFORE_SLICING))
def test_the_stored_document_is_byte_for_byte_the_same_in_any_slices(
    service: BulkService, monkeypatch: pytest.MonkeyPatch, slice_records: int, records: int
) -> None:
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=records))
    monkeypatch.setattr(time, "time", lambda: 1764547200.25)
    worker = sliced(service, slice_records, max_records=20_000)
    sync = worker.submit(payloads.body(records), "sync")
    sync_document = worker.result(sync.id) or b""
    assert hashlib.sha256(sync_document).hexdigest() == DOCUMENTS_BEFORE_SLICING[records]
    with sqlite3.connect(service.store.path) as conn:
        conn.execute("DELETE FROM submissions")  # the fixed id again
        conn.execute("DELETE FROM results")
    on_loop = asyncio.run(worker.submit_async(payloads.body(records), "sync"))
    assert (on_loop, worker.result(on_loop.id)) == (sync, sync_document)


def whole_body_errors(text: bytes, max_records: int) -> list[tuple[str, tuple[Any, ...], str]]:
    """What pydantic reports validating the body in one call, as the service did before."""
    try:
        bulk_request_model(max_records).model_validate_json(text)
    except ValidationError as exc:
        return [(e["type"], tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    return []


BAD_BODIES = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'{"records": {}}',
    b'{"records": []}',
    b'{"lines": []}',
    b'{"records": [1, "x", null, []]}',
    body(record(), record(quantity="3"), record(), record(), record(sku="x", tags="t")),
    body(*[record()] * 6, record(note=1), record(tags=[1, "t" * 33], customer="")),
    body(record(discount=5), record(), dry_run=True, mode="x"),
    body(*[{"a": 1}] * 3),
    body(record(quantity=3.5, unit_price=True), record(**{f"x{i}": i for i in range(30)})),
]


@pytest.mark.parametrize("slice_records", [WHOLE, 1, 3])
@pytest.mark.parametrize("text", BAD_BODIES)
def test_errors_are_the_ones_whole_body_validation_gives(
    service: BulkService, slice_records: int, text: bytes
) -> None:
    expected = whole_body_errors(text, 50)
    with pytest.raises(InvalidBulk) as info:
        sliced(service, slice_records).parse(text)
    found = [(e["type"], tuple(e["loc"]), e["msg"]) for e in info.value.errors]
    assert info.value.count == len(expected)
    assert found == expected[:MAX_ERRORS]


def test_errors_are_bounded_and_carry_no_input(service: BulkService) -> None:
    with pytest.raises(InvalidBulk) as info:
        sliced(service, SLICE_RECORDS, max_records=20_000).parse(body(*[{"a": 1}] * 20_000))
    assert info.value.count == 100_000  # four missing fields and one unknown key each
    assert len(info.value.errors) == MAX_ERRORS
    assert all(set(e) == {"type", "loc", "msg"} for e in info.value.errors)
    assert "100000" in str(info.value)


def test_an_error_in_a_later_slice_names_its_record(service: BulkService) -> None:
    records = [record()] * 7 + [record(quantity=0)] + [record()] * 4
    with pytest.raises(InvalidBulk) as info:
        sliced(service, 3).parse(body(*records))
    assert [e["loc"] for e in info.value.errors] == [("records", 7, "quantity")]


def test_unknown_keys_are_counted_without_an_error_each(service: BulkService) -> None:
    many = {f"k{i}": 0 for i in range(50_000)}
    for text, count in [(body({**record(), **many}), 50_000), (body(record(), **many), 50_000)]:
        with pytest.raises(InvalidBulk) as info:
            service.parse(text)
        assert info.value.count == count
        assert [e["type"] for e in info.value.errors] == ["extra_forbidden"] * MAX_ERRORS


def test_a_negative_slice_size_is_refused(service: BulkService) -> None:
    with pytest.raises(ValueError, match="slice_records=-1"):
        sliced(service, -1)


def test_the_async_path_gives_the_loop_back_between_slices(
    service: BulkService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def inline(func: Callable[..., object], *args: object) -> object:
        return func(*args)

    # The store's calls leave the loop for a thread (counted by the store's tests); inline here,
    # so that the turns counted are the ones the slicing gives back.
    monkeypatch.setattr(asyncio, "to_thread", inline)

    def turns_while_submitting(slice_records: int) -> int:
        async def run() -> int:
            turns = 0
            done = asyncio.Event()

            async def other_task() -> None:
                nonlocal turns
                while not done.is_set():
                    turns += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(other_task())
            await asyncio.sleep(0)
            await sliced(service, slice_records).submit_async(body(*[record()] * 40), "async")
            done.set()
            await task
            return turns

        return asyncio.run(run())

    assert turns_while_submitting(WHOLE) <= 3
    assert turns_while_submitting(4) >= 10


PEAK_SCRIPT = """
import resource, sys, tempfile
import psutil
from app.workload import catalogue, sqlite
from app.workload.bulk import BulkService, InvalidBulk
from app.workload.cache import BulkCache
from app.workload.sqlite import SqliteStore
from app.workload.load import payloads
path = tempfile.mkdtemp() + "/db.sqlite"
sqlite.initialize(path)
service = BulkService(SqliteStore(path), BulkCache(300, 16, 64 * 2**20), 20_000)
good = payloads.body(20_000)
# As many records, as many bytes, as many errors as a record can carry without being cut.
keys = b",".join(b'"k%d":0' % i for i in range(15))
pad = b"x" * (len(good) // 20_000 - len(keys) - 10)
bad = b'{"records":[' + b",".join([b"{" + keys + b',"p":"' + pad + b'"}'] * 20_000) + b"]}"
text = good if sys.argv[1] == "good" else bad
before = psutil.Process().memory_info().rss
try:
    service.submit(text, "sync")
except InvalidBulk as exc:
    assert exc.count == 20_000 * 20 and abs(len(bad) - len(good)) < len(good) // 100, exc.count
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
"""


def test_a_bad_body_holds_no_more_memory_than_a_good_one_of_its_size() -> None:
    # Each in a fresh process: its peak RSS above what it held before the submission. Before
    # the bound, 20,000 bad records built 100,000 error dicts, several times a good body's peak.
    def peak(kind: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, kind],
            capture_output=True, check=True, text=True, cwd=REPO, timeout=60,
        )
        return int(done.stdout)

    good, bad = peak("good"), peak("bad")
    # 10% for the noise of two processes; the unbounded errors took 734 MB against 38 MB.
    assert bad <= good * 1.1, f"bad body peak {bad / MB:.1f}MB, good body {good / MB:.1f}MB"


def test_a_cancelled_async_submission_stores_nothing(service: BulkService) -> None:
    async def cancel_midway() -> None:
        task = asyncio.create_task(
            sliced(service, 2).submit_async(body(*[record()] * 40), "async")
        )
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    with sqlite3.connect(service.store.path) as conn:
        assert sqlite.submission_count(conn) == 0
    assert service.cache.stats().entries == 0
