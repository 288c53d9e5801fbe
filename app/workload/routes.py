"""HTTP routes of the reference workload: the same bulk work on a sync and an async path.

The sync path runs in a worker thread, where each busy thread can grow its own glibc arena; the
async path runs on the event loop thread. Both take the raw body and parse it themselves, so the
parsing and validation allocate on the path being measured, not on the loop for both.

Both paths share one limiter (BULK_CONCURRENCY, split across workers): a submission holds tens
of MB while it runs, and in one process held by the GIL, more of them at once do not finish
sooner; they only raise the peak. The others wait their turn with their bodies read. How many
may wait is the memory manager's admission control: ADMITTED_ROUTES tells it what a submission
costs, and it reserves that before a byte of the body is read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import ClientDisconnect

from app.errors import PartialValidationError
from app.memory.gate import RouteCost
from app.memory.outbound import StoredResponse
from app.workload.bulk import BulkService, InvalidBulk, TooManyRecords
from app.workload.models import SKU_PATTERN, BulkSummary, Product, Record, inline_schema
from app.workload.store import StoreUnavailable

log = logging.getLogger(__name__)

# Bytes a submission holds per body byte while it is parsed, validated, enriched and encoded,
# its body included. Measured as a fresh server's peak RSS growth over one submission
# (docs/overload.md): 10.7x for 20,000 records of ~400 bytes (7.7 MB, near MAX_BODY_MB), 13.4x
# for 20,000 of ~130 bytes (2.6 MB), 20x for 3,000 of those (0.4 MB): small records cost more
# per byte and little in all. 12 covers the bodies that weigh, underestimates the small ones by
# a few MB (the headroom and the pressure check take that), and keeps one MAX_BODY_MB body
# (8 MB: 96 MB) well within a 2-worker share of 500 MB.
COST_FACTOR = 12.0
ADMITTED_ROUTES = (
    RouteCost("POST", "/bulk/sync", COST_FACTOR),
    RouteCost("POST", "/bulk/async", COST_FACTOR),
)
CLOSE = {"Connection": "close"}  # a refused body is not read on: the client must reconnect


# Path segments matched by their pattern at routing time: anything else is not this route (404,
# or 405 where another route has that path), rather than a 422 echoing the input.
class _SubmissionIdSegment(StringConvertor):
    regex = "[0-9a-f]{32}"


class _SkuSegment(StringConvertor):
    regex = SKU_PATTERN.strip("^$")


register_url_convertor("submission_id", _SubmissionIdSegment())
register_url_convertor("sku", _SkuSegment())

router = APIRouter(tags=["bulk"])
BULK_ERRORS: dict[int | str, dict[str, object]] = {
    408: {"description": "Body not received within BODY_TIMEOUT_SECONDS"},
    413: {"description": "Body over MAX_BODY_MB or more than MAX_BULK_RECORDS records"},
    415: {"description": "Not UTF-8 application/json, or a Content-Encoding"},
    422: {"description": "Malformed JSON or invalid records (the first few, and the count)"},
    503: {
        "description": "No room in the memory budget now, or the database is unreachable; "
        "retry after Retry-After seconds"
    },
}
UNAVAILABLE: dict[int | str, dict[str, object]] = {
    503: {"description": "The database is unreachable; retry after Retry-After seconds"}
}

SubmissionId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
Sku = Annotated[str, PathParam(pattern=SKU_PATTERN)]


def _request_body_schema() -> dict[str, object]:
    # Documented from the same Record model the endpoints validate with (count bound aside).
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["records"],
        "properties": {
            "records": {"type": "array", "minItems": 1, "items": Record.model_json_schema()}
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(schema)}},
        }
    }


@dataclass(frozen=True)
class Bulk:
    """What the bulk routes depend on, built once at mount (app/workload/mount.py)."""

    service: BulkService
    limiter: anyio.CapacityLimiter  # BULK_CONCURRENCY, this worker's share
    max_body_bytes: int  # MAX_BODY_MB


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in the
# threadpool, a thread hop per request before the body is even read.
async def bulk_of(request: Request) -> Bulk:
    found = request.app.state.bulk
    if not isinstance(found, Bulk):
        raise RuntimeError("the bulk workload is not mounted on this app")
    return found


BulkDep = Annotated[Bulk, Depends(bulk_of)]


async def bulk_service(bulk: BulkDep) -> BulkService:
    return bulk.service


async def bulk_limiter(bulk: BulkDep) -> anyio.CapacityLimiter:
    return bulk.limiter


def _check_content_type(value: str) -> None:
    media_type, *params = (part.strip() for part in value.split(";"))
    if media_type.lower() != "application/json":
        raise HTTPException(415, "send the records as application/json")
    for param in params:
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip('" ').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise HTTPException(415, "JSON must be UTF-8: send charset=utf-8 or no charset")


async def json_body(request: Request, bulk: BulkDep) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_MB: a declared length
    is checked before reading and the stream is counted as it arrives, never buffered past it.
    With admission on, the gate has read it already under the same limit; this is the check for
    a service run without it."""
    limit = bulk.max_body_bytes
    _check_content_type(request.headers.get("content-type", ""))
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise HTTPException(415, "Content-Encoding is not supported: send the body uncompressed")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413, f"body of {declared} bytes is over the {limit}-byte limit (MAX_BODY_MB)", CLOSE
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413, f"body is over the {limit}-byte limit (MAX_BODY_MB)", CLOSE
                )
            chunks.append(chunk)
    except ClientDisconnect:
        log.info("[bulk] client disconnected after %d body bytes of %s", size, request.url.path)
        raise HTTPException(400, "client disconnected") from None  # no one reads this reply
    return b"".join(chunks)


Body = Annotated[bytes, Depends(json_body)]
Service = Annotated[BulkService, Depends(bulk_service)]
Limiter = Annotated[anyio.CapacityLimiter, Depends(bulk_limiter)]


def _submit(service: BulkService, body: bytes, path: str) -> BulkSummary:
    try:
        return service.submit(body, path)
    except (TooManyRecords, InvalidBulk) as exc:
        raise _refusal(exc) from None


def _refusal(exc: TooManyRecords | InvalidBulk) -> Exception:
    """The reply to a bad body, of bounded size: the first errors and how many there were,
    never the input (for a JSON syntax error that would be the whole body)."""
    if isinstance(exc, TooManyRecords):
        return HTTPException(413, str(exc))
    return PartialValidationError(exc.errors, exc.count)


@router.post(
    "/bulk/sync",
    status_code=201,
    openapi_extra=_request_body_schema(),
    responses=BULK_ERRORS,
)
async def bulk_sync(body: Body, service: Service, limiter: Limiter) -> BulkSummary:
    """Process a batch of records in a worker thread."""
    return await anyio.to_thread.run_sync(_submit, service, body, "sync", limiter=limiter)


@router.post(
    "/bulk/async",
    status_code=201,
    openapi_extra=_request_body_schema(),
    responses=BULK_ERRORS,
)
async def bulk_async(body: Body, service: Service, limiter: Limiter) -> BulkSummary:
    """Process a batch of records on the event loop."""
    async with limiter:
        try:
            return await service.submit_async(body, "async")
        except (TooManyRecords, InvalidBulk) as exc:
            raise _refusal(exc) from None


# Each names its reason in words a client can match: "expired", or not.
GONE_DETAIL = {
    "expired": "result expired: results are kept for CACHE_TTL_SECONDS",
    None: "no such result in this service's database",
}


@router.get(
    "/bulk/{submission_id:submission_id}",
    responses={404: {"description": "Expired, or unknown"}, **UNAVAILABLE},
)
def bulk_result(submission_id: SubmissionId, service: Service) -> Response:
    """A stored result with its enriched lines, until CACHE_TTL_SECONDS after it was stored."""
    hot = service.cache.get(submission_id)
    if hot is not None:
        length = len(hot)
    else:
        found = service.store.find(submission_id, time.time())
        if found is None or found.expired:
            raise HTTPException(404, GONE_DETAIL["expired" if found else None])
        length = found.length
    del hot  # each slice looks the result up again: a slow reader pins no whole copy
    read = partial(_read_slice, service, submission_id)
    # Each slice is read in a worker thread: a store call never holds the event loop.
    return StoredResponse(read, length, "application/json", in_thread=True)


def _read_slice(service: BulkService, submission_id: str, offset: int, size: int) -> bytes | None:
    """A slice of the hot copy while there is one, else read anew from the store; None ends
    the reply short if the database went away in the middle (the store logs its outage once)."""
    hot = service.cache.get(submission_id)
    if hot is not None:
        return hot[offset : offset + size]
    try:
        return service.store.read(submission_id, offset, size)
    except StoreUnavailable:
        return None


@router.get(
    "/products/{sku:sku}",
    responses={404: {"description": "Unknown product"}, **UNAVAILABLE},
)
def get_product(sku: Sku, service: Service) -> Product:
    """One product of the catalogue."""
    found = service.store.product(sku)
    if found is None:
        raise HTTPException(404, f"no product {sku}")
    return Product(**found._asdict())


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """503 with Retry-After for any route that needed the database while it is down; the store
    logged the outage once, so nothing more is logged per request."""
    retry_after = exc.retry_after if isinstance(exc, StoreUnavailable) else 5
    return JSONResponse(
        {"detail": f"{exc}: retry after {retry_after}s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )
