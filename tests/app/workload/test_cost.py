"""The bulk routes' cost factor against what a submission really holds.

Admission reserves ``body size x COST_FACTOR`` before a body is read; if a submission held more
than that per byte, the budget would admit more than fits. The figure here is the traced peak
(tracemalloc: deterministic, whatever else the machine runs) of one submission, plus the body
itself twice (the gate's chunks and the joined bytes), per body byte. Small bodies cost more per
byte (a model, a dict and a line per record whatever its size) but little in all, so the shapes
checked are the ones that weigh: 3,000 records and up. docs/overload.md gives the RSS figures.
"""

from __future__ import annotations

import contextlib
import json
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from app.workload import sqlite
from app.workload.bulk import BulkService, InvalidBulk
from app.workload.cache import BulkCache
from app.workload.load import payloads
from app.workload.routes import COST_FACTOR
from app.workload.sqlite import SqliteStore

MB = 1024 * 1024


def long_notes(records: int) -> bytes:
    """Records of ~400 bytes each: at 20,000, a body just under MAX_BODY_MB."""
    rng = random.Random(records)
    rows = [{**payloads.make_record(rng), "note": "x" * 300} for _ in range(records)]
    return json.dumps({"records": rows}, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> BulkService:
    path = Path(tmp_path_factory.mktemp("cost")) / "db.sqlite"
    sqlite.initialize(path)
    return BulkService(SqliteStore(path), BulkCache(300, 256, 256 * MB), 20_000)


def submit(service: BulkService, body: bytes) -> None:
    with contextlib.suppress(InvalidBulk):
        service.submit(body, "sync")


def held_per_byte(service: BulkService, body: bytes) -> float:
    submit(service, body)  # warm: the first call builds validators and caches
    tracemalloc.start()
    try:
        submit(service, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak + 2 * len(body)) / len(body)


@pytest.mark.parametrize(
    "make",
    [
        lambda: payloads.body(20_000),
        lambda: payloads.body(3_000),
        lambda: long_notes(20_000),
    ],
    ids=["20000-load-test-records", "3000-load-test-records", "20000-long-records"],
)
def test_a_submission_holds_less_than_its_reservation(
    service: BulkService, make: Callable[[], bytes]
) -> None:
    body = make()
    factor = held_per_byte(service, body)
    assert factor <= COST_FACTOR, f"held {factor:.1f}x its body, reserved {COST_FACTOR:g}x"


def test_a_bad_body_holds_no_more_than_a_good_one_of_its_size(service: BulkService) -> None:
    good = payloads.body(3_000)
    bad = good.replace(b'"quantity":', b'"quantity":"x","q":')  # every record wrong twice
    assert abs(len(bad) - len(good)) < len(good) * 0.2
    assert held_per_byte(service, bad) <= held_per_byte(service, good)
