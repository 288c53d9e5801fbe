"""The bulk submission: strict parsing, bounds, enrichment, the stored document, the row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.workload import database
from app.workload.bulk import BulkService, TooManyRecords
from app.workload.cache import BulkCache
from tests.app.workload.records import body, record

MB = 1024 * 1024


@pytest.fixture
def service(tmp_path: Path) -> BulkService:
    path = tmp_path / "db.sqlite"
    database.initialize(path)
    return BulkService(path, BulkCache(300, 16, 16 * MB), max_records=5)


def error_types(info: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {e["type"] for e in info.value.errors()}


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
    with pytest.raises(ValidationError) as info:
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
    with pytest.raises(ValidationError) as info:
        service.parse(body(record(**overrides)))
    assert error in error_types(info)


def test_extra_fields_are_refused(service: BulkService) -> None:
    with pytest.raises(ValidationError) as info:
        service.parse(body(record(discount=5)))
    assert "extra_forbidden" in error_types(info)
    with pytest.raises(ValidationError) as info:
        service.parse(body(record(), dry_run=True))
    assert "extra_forbidden" in error_types(info)


def test_missing_field_and_empty_list_are_invalid(service: BulkService) -> None:
    incomplete = record()
    del incomplete["customer"]
    with pytest.raises(ValidationError):
        service.parse(body(incomplete))
    with pytest.raises(ValidationError) as info:
        service.parse(body())
    assert "too_short" in error_types(info)


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b'{"records": [1, 2]', b"\xff\xfe"])
def test_malformed_json_is_invalid(service: BulkService, text: bytes) -> None:
    with pytest.raises(ValidationError):
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
    with sqlite3.connect(service.db_path) as conn:
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
    with sqlite3.connect(service.db_path) as conn:
        rows = conn.execute(
            "SELECT id, path, records, total_amount, unknown_skus FROM submissions"
        ).fetchall()
    assert rows == [(summary.id, "async", 2, summary.total_amount, 1)]


def test_invalid_submit_stores_nothing(service: BulkService) -> None:
    with pytest.raises(ValidationError):
        service.submit(body(record(quantity="3")), "sync")
    with pytest.raises(TooManyRecords):
        service.submit(body(*[record()] * 6), "sync")
    with sqlite3.connect(service.db_path) as conn:
        assert database.submission_count(conn) == 0
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
