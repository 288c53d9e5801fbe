"""Bulk bodies: valid for the service's own schema, under its body limit, built once."""

from __future__ import annotations

import json
import random

import pytest

from app.workload.load.payloads import (
    DEFAULT_SIZES,
    KNOWN_SKUS,
    PayloadBank,
    SizeSpecError,
    body,
    parse_buckets,
    parse_think,
)
from app.workload.models import bulk_request_model
from app.workload.settings import BulkSettings

MAX_RECORDS = BulkSettings.model_fields["max_bulk_records"].default
MAX_BODY_BYTES = BulkSettings.model_fields["max_body_mb"].default * 1024 * 1024


@pytest.mark.parametrize("records", [b.records for b in parse_buckets(DEFAULT_SIZES)])
def test_every_default_body_passes_the_service_schema(records: int) -> None:
    model = bulk_request_model(MAX_RECORDS)
    parsed = model.model_validate_json(body(records))
    assert len(parsed.records) == records  # type: ignore[attr-defined]


def test_the_largest_body_fits_under_the_service_body_limit() -> None:
    largest = max(b.records for b in parse_buckets(DEFAULT_SIZES))
    assert largest <= MAX_RECORDS
    assert len(body(largest)) < MAX_BODY_BYTES


def test_bodies_mix_known_and_unknown_products() -> None:
    records = json.loads(body(5000))["records"]
    unknown = sum(int(r["sku"][4:]) >= KNOWN_SKUS for r in records)
    assert 0 < unknown < len(records) * 0.1


def test_bodies_are_built_once_and_variants_differ() -> None:
    assert body(1000, 0) is body(1000, 0)
    assert body(1000, 0) != body(1000, 1)


def test_picks_are_skewed_toward_small_bodies() -> None:
    bank = PayloadBank(parse_buckets("200:55,20000:6"))
    rng = random.Random(7)
    sizes = [bank.pick(rng)[0] for _ in range(2000)]
    assert sizes.count(200) > 5 * sizes.count(20000) > 0


def test_mean_records_weighs_each_size() -> None:
    assert PayloadBank(parse_buckets("100:1,300:1")).mean_records() == 200


@pytest.mark.parametrize("spec", ["", "big:1", "100:0", "0:5", "100:x"])
def test_bad_size_lists_are_refused(spec: str) -> None:
    with pytest.raises(SizeSpecError):
        parse_buckets(spec)


def test_think_time_reads_a_range_or_one_number() -> None:
    assert parse_think("0.5,2") == (0.5, 2.0)
    assert parse_think("1") == (1.0, 1.0)
    with pytest.raises(SizeSpecError):
        parse_think("2,1")
