"""The bulk submission: validate, enrich from the catalogue, aggregate, store the result.

It builds what real services build (a model per record, a dict per enriched line, one large JSON
document) because that is what fragments a heap; the service's memory story depends on it. The
lines are encoded one at a time, as a service that cares about its peak would.

The records go through in slices: a slice is validated, enriched and encoded before the next is
touched, and the async path hands the event loop back between slices. In one go, a
20,000-record submission held the loop for its whole run (528 ms measured) and every /healthz,
scrape and light request waited behind it. The sync path runs the same slices back to back in a
worker thread: pydantic-core holds the GIL for each call, so a shorter call is a shorter wait
for the loop there too.

The result is written to the store (app/workload/store.py) before the summary is returned, so a
201 means it is in the database: any worker or replica reads it back, whatever happens to this
one. The cache keeps a hot copy of recent results; dropping one from it loses nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.errors import SHOWN_ERRORS
from app.workload.cache import BulkCache
from app.workload.catalogue import ProductRow
from app.workload.models import BulkSummary, Record, bulk_envelope_model
from app.workload.store import Store, StoreUnavailable, Submission

log = logging.getLogger(__name__)
READ_GRACE_SECONDS = 30.0  # how long an expired result's row is kept for reads already under way

# Records per slice, measured on the load test's 20,000-record body (2.7 MB): a slice of 500
# holds the loop ~4 ms (1,000: ~8.5 ms, 5,000: ~40 ms), at the CPU time per submission of the
# unsliced code (177 ms against 176 ms) and a third of its peak (13 MB against 38 MB,
# tracemalloc). The longest hold left is the JSON parse of the body, ~7 ms per MB.
SLICE_RECORDS = 500
WHOLE = 0  # slice_records value: every record in one slice, the loop held throughout
MAX_ERRORS = SHOWN_ERRORS  # errors kept: as many as a 422 shows; the count covers them all

_RECORD_FIELDS = frozenset(Record.model_fields)
_KEY_LIMIT = len(_RECORD_FIELDS) + MAX_ERRORS
# Validation runs on parsed JSON (Python mode), where pydantic words two errors in Python terms.
_JSON_WORDING = {
    "model_type": "Input should be an object",
    "list_type": "Input should be a valid array",
}
_EXTRA_KEY = "Extra inputs are not permitted"

T = TypeVar("T")
StoreCall = Callable[[], Any]  # a store call the submission hands its driver to run


class TooManyRecords(ValueError):
    """More records than MAX_BULK_RECORDS."""


class InvalidBulk(ValueError):
    """A body that is not a valid bulk request: its first errors and how many it had in all.

    Bounded on purpose: pydantic's own list for 20,000 records of `{"a": 1}` is 100,000 error
    dicts, ~290 MB with their inputs, to report what the first ten already say.
    """

    def __init__(self, errors: list[dict[str, Any]], count: int) -> None:
        super().__init__(f"{count} error(s) in the bulk body")
        self.errors = errors  # at most MAX_ERRORS, each {"type", "loc", "msg"}
        self.count = count


class BulkService:
    def __init__(
        self,
        store: Store,
        cache: BulkCache,
        max_records: int,
        slice_records: int = SLICE_RECORDS,
    ) -> None:
        if slice_records < 0:
            raise ValueError(f"slice_records={slice_records}: 0 (whole) or more")
        self.store = store
        self.cache = cache  # hot copies of recent results; the TTL is its ttl
        self._newest_expiry: float | None = None  # of this worker's results, on time.monotonic
        self.max_records = max_records
        self.slice_records = slice_records
        self._envelope: type[BaseModel] = bulk_envelope_model(max_records)
        self._records = TypeAdapter(list[Record])

    def parse(self, body: bytes) -> list[Record]:
        """Every record of a body; InvalidBulk for bad input, TooManyRecords past the cap."""
        return [record for chunk in self._validated(body) for record in chunk]

    def submit(self, body: bytes, path: str) -> BulkSummary:
        """Process a submission in the calling thread (the sync path's worker thread)."""
        return _run(self._steps(body, path))

    async def submit_async(self, body: bytes, path: str) -> BulkSummary:
        """Process a submission on the event loop, giving the loop back between slices.

        The store's calls run in a worker thread, SQLite's too: writing a 9.6 MB result, or
        waiting out another worker's write lock, takes from milliseconds to seconds, and inline it
        held the loop and every /healthz behind it (p50 1.7 s under the standard spike). A
        PostgreSQL round trip, or a wait for a database that went away, likewise."""
        steps = self._steps(body, path)
        sent: Any = None
        try:
            while True:
                try:
                    call = steps.send(sent)
                except StopIteration as done:
                    summary: BulkSummary = done.value
                    return summary
                if call is None:
                    sent = None
                    await asyncio.sleep(0)
                else:
                    sent = await asyncio.to_thread(call)
        finally:
            steps.close()  # cancelled (the client went away): its connection closes now

    def result(self, submission_id: str) -> bytes | None:
        """A result's whole document, or None if unknown or expired. For tests and tools: the
        GET route streams it a slice at a time instead (app/workload/routes.py)."""
        hot = self.cache.get(submission_id)
        if hot is not None:
            return hot
        found = self.store.find(submission_id, time.time())
        if found is None or found.expired:
            return None
        return self.store.read(submission_id, 0, found.length)

    def purge_expired(self) -> int:
        """The cleanup hook: delete the expired results from the store (every worker does,
        each run is idempotent) and drop expired hot copies; returns how many results went."""
        self.cache.purge_expired()
        try:
            # A read that began before its result expired may finish: the row stays a while
            # past its expiry (a reply whose row went mid-stream ends short).
            deleted = self.store.purge_expired(time.time() - READ_GRACE_SECONDS)
        except StoreUnavailable:
            return 0  # the outage is logged once by the store; the next run deletes them
        if deleted:
            log.info("[bulk] %d expired result(s) deleted from %s", deleted, self.store.description)
        return deleted

    def all_expired_at(self) -> float | None:
        """When every result this worker stored will have expired, on time.monotonic: the
        cleanup loop runs the hook then, so the rows go at the end of their TTL."""
        return self._newest_expiry

    def _steps(self, body: bytes, path: str) -> Generator[StoreCall | None, Any, BulkSummary]:
        """The submission, pausing after each slice (None) and handing out each store call for
        the driver to run and send back its result; nothing is stored unless all are valid."""
        writer = _DocumentWriter()
        catalogue = _Catalogue()
        for records in self._validated(body):
            wanted = catalogue.missing(records)
            if wanted:
                catalogue.add(wanted, (yield partial(self.store.products_by_sku, wanted)))
            writer.add(records, catalogue.products)
            yield None
        submission_id = uuid.uuid4().hex
        created_at = time.time()
        summary, document = writer.finish(submission_id, created_at, path)
        ttl = self.cache.ttl
        # Committed before the reply: a failed write raises (503 for an outage), never a 201.
        yield partial(
            self.store.save,
            Submission(
                summary.id,
                created_at,
                path,
                summary.records,
                summary.total_amount,
                summary.unknown_skus,
            ),
            document,
            created_at + ttl,
        )
        self._newest_expiry = time.monotonic() + ttl
        self.cache.put(summary.id, document)  # a hot copy, if it fits CACHE_MAX_MB
        return summary

    def _validated(self, body: bytes) -> Iterator[list[Record]]:
        """The records a slice at a time; after the last slice, InvalidBulk if any was bad.

        Every slice is validated even after a bad one, so the count covers the whole body;
        from the first bad slice on, the slices come out empty and nothing more is built.
        """
        errors = _Errors()
        pending = self._envelope_records(body, errors)
        yield []  # the parse of the whole body is a step of its own
        size = self.slice_records or len(pending)
        start = 0
        while pending:
            chunk = pending[:size]
            del pending[:size]  # the parsed dicts go as their slice is done
            records = self._validate_slice(chunk, start, errors)
            start += len(chunk)
            yield [] if errors.count else records
        errors.raise_if_any()

    def _envelope_records(self, body: bytes, errors: _Errors) -> list[Any]:
        try:
            data = pydantic_core.from_json(body, cache_strings="keys")
        except ValueError as exc:
            raise InvalidBulk([_error("json_invalid", (), f"Invalid JSON: {exc}")], 1) from None
        if type(data) is dict:
            errors.extra_keys(data)
        try:
            envelope = self._envelope.model_validate(data)
        except ValidationError as exc:
            if any(e["type"] == "too_long" and e["loc"] == ("records",) for e in exc.errors()):
                raise TooManyRecords(
                    f"more than {self.max_records} records (MAX_BULK_RECORDS)"
                ) from None
            errors.add(exc, offset=None)
            errors.raise_if_any()
        # A model made by create_model at startup: mypy cannot see its `records` field.
        records: list[Any] = envelope.records  # type: ignore[attr-defined]
        return records

    def _validate_slice(self, chunk: list[Any], start: int, errors: _Errors) -> list[Record]:
        chunk, cut = _cut_extra_keys(chunk)
        try:
            return self._records.validate_python(chunk)
        except ValidationError as exc:
            errors.add(exc, offset=start)
            errors.count += cut
            return []


def _run(steps: Generator[StoreCall | None, Any, T]) -> T:
    """Drive ``steps`` in the calling thread, running each store call inline."""
    sent: Any = None
    while True:
        try:
            call = steps.send(sent)
        except StopIteration as done:
            value: T = done.value
            return value
        sent = call() if call is not None else None


def _error(kind: str, loc: tuple[int | str, ...], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg}


class _Errors:
    """A body's first MAX_ERRORS errors and the count of all, gathered a slice at a time.

    error_count() is cheap; the error dicts are built only while fewer than MAX_ERRORS are kept,
    and without their inputs (for a JSON syntax error the input is the whole body).
    """

    def __init__(self) -> None:
        self.first: list[dict[str, Any]] = []
        self.trailing: list[dict[str, Any]] = []  # unknown top-level keys: pydantic lists them last
        self.count = 0

    def add(self, exc: ValidationError, offset: int | None) -> None:
        """A slice's errors (offset: its first record's index) or the envelope's (None)."""
        self.count += exc.error_count()
        room = MAX_ERRORS - len(self.first)
        if room <= 0:
            return
        found = exc.errors(include_url=False, include_context=False, include_input=False)
        for e in found[:room]:
            loc = tuple(e["loc"])
            if offset is not None:
                loc = ("records", offset + int(loc[0]), *loc[1:])
            self.first.append(_error(e["type"], loc, _JSON_WORDING.get(e["type"], e["msg"])))

    def extra_keys(self, data: dict[str, Any]) -> None:
        unknown = len(data) - ("records" in data)
        if unknown:
            self.count += unknown
            names = islice((k for k in data if k != "records"), MAX_ERRORS)
            self.trailing = [_error("extra_forbidden", (k,), _EXTRA_KEY) for k in names]

    def raise_if_any(self) -> None:
        if self.count:
            raise InvalidBulk((self.first + self.trailing)[:MAX_ERRORS], self.count)


def _cut_extra_keys(chunk: list[Any]) -> tuple[list[Any], int]:
    """The slice with each record's unknown keys cut to the first MAX_ERRORS, and how many went.

    Each unknown key is one error that pydantic would hold: a single record with a million keys
    held ~270 MB of them. The count stays exact.
    """
    if not any(type(item) is dict and len(item) > _KEY_LIMIT for item in chunk):
        return chunk, 0
    cut = 0
    out: list[Any] = []
    for item in chunk:
        if type(item) is dict and len(item) > _KEY_LIMIT:
            kept = {k: item[k] for k in _RECORD_FIELDS if k in item}
            unknown = islice((k for k in item if k not in _RECORD_FIELDS), MAX_ERRORS)
            kept.update((k, item[k]) for k in unknown)
            cut += len(item) - len(kept)
            item = kept
        out.append(item)
    return out, cut


class _Catalogue:
    """Products fetched as the slices need them, each SKU asked for once per submission."""

    def __init__(self) -> None:
        self.products: dict[str, ProductRow] = {}
        self.asked: set[str] = set()

    def missing(self, records: list[Record]) -> set[str]:
        """The SKUs of ``records`` not asked for yet."""
        return {r.sku for r in records} - self.asked

    def add(self, asked: set[str], found: dict[str, ProductRow]) -> None:
        self.products.update(found)
        self.asked |= asked


def _enrich(record: Record, product: ProductRow | None) -> dict[str, Any]:
    net = round(record.quantity * record.unit_price, 2)
    tax_rate = product.tax_rate if product else 0.0
    tax = round(net * tax_rate, 2)
    return {
        "sku": record.sku,
        "name": product.name if product else None,
        "category": product.category if product else "unknown",
        "quantity": record.quantity,
        "unit_price": record.unit_price,
        "net": net,
        "tax": tax,
        "gross": round(net + tax, 2),
        "weight_g": record.quantity * product.unit_weight_g if product else None,
        "customer": record.customer,
        "tags": record.tags,
        "note": record.note,
    }


class _DocumentWriter:
    """The summary's totals and the stored JSON document, written one line at a time.

    Each enriched line is encoded as soon as it is made and only the totals are kept: a list of
    all the line dicts, encoded at the end, took a 20,000-record submission's peak to 49 MB
    against 38 MB this way (tracemalloc), all of it short-lived and all of it in the peak.
    """

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, float]] = defaultdict(
            lambda: {"records": 0, "quantity": 0, "gross": 0.0}
        )
        self.lines = io.BytesIO()
        self.records = 0
        self.encode = json.JSONEncoder(separators=(",", ":")).encode

    def add(self, records: list[Record], products: dict[str, ProductRow]) -> None:
        for record in records:
            line = _enrich(record, products.get(record.sku))
            bucket = self.totals[line["category"]]
            bucket["records"] += 1
            bucket["quantity"] += line["quantity"]
            bucket["gross"] += line["gross"]
            self.lines.write(b"," if self.records else b"[")
            self.lines.write(self.encode(line).encode())
            self.records += 1

    def finish(
        self, submission_id: str, created_at: float, path: str
    ) -> tuple[BulkSummary, bytes]:
        self.lines.write(b"]")
        summary = _summarize(submission_id, self.records, self.totals)
        head = self.encode({**summary.model_dump(), "created_at": created_at, "path": path})
        document = b"".join((head[:-1].encode(), b',"lines":', self.lines.getbuffer(), b"}"))
        return summary, document


def _summarize(
    submission_id: str, records: int, totals: dict[str, dict[str, float]]
) -> BulkSummary:
    by_category = {
        name: {
            "records": int(t["records"]),
            "quantity": int(t["quantity"]),
            "gross": round(t["gross"], 2),
        }
        for name, t in sorted(totals.items())
    }
    return BulkSummary(
        id=submission_id,
        records=records,
        total_amount=round(sum(t["gross"] for t in by_category.values()), 2),
        unknown_skus=int(totals["unknown"]["records"]) if "unknown" in totals else 0,
        by_category=by_category,
    )
