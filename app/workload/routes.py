"""HTTP routes of the reference workload: the same bulk work on a sync and an async path.

The sync path runs in a worker thread, where each busy thread can grow its own glibc arena; the
async path runs on the event loop thread. Both take the raw body and parse it themselves, so the
parsing and validation allocate on the path being measured, not on the loop for both.

Both paths share one limiter (BULK_CONCURRENCY, split across workers): a submission holds tens
of MB while it runs, and in one process held by the GIL, more of them at once do not finish
sooner; they only raise the peak. The others wait their turn with their bodies read.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.workload import database
from app.workload.bulk import BulkService, TooManyRecords
from app.workload.models import SKU_PATTERN, BulkSummary, Product, Record, inline_schema

router = APIRouter(tags=["bulk"])
BULK_ERRORS: dict[int | str, dict[str, object]] = {
    413: {"description": "Body over MAX_BODY_MB or more than MAX_BULK_RECORDS records"},
    415: {"description": "Content type is not application/json"},
    422: {"description": "Malformed JSON or invalid records; nothing is stored"},
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


def bulk_service(request: Request) -> BulkService:
    return request.app.state.bulk  # type: ignore[no-any-return]


def bulk_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.bulk_limiter  # type: ignore[no-any-return]


async def json_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_MB: a declared length
    is checked before reading and the stream is counted as it arrives, never buffered past it."""
    limit: int = request.app.state.max_body_bytes
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the records as application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413, f"body of {declared} bytes is over the {limit}-byte limit (MAX_BODY_MB)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the {limit}-byte limit (MAX_BODY_MB)")
        chunks.append(chunk)
    return b"".join(chunks)


Body = Annotated[bytes, Depends(json_body)]
Service = Annotated[BulkService, Depends(bulk_service)]
Limiter = Annotated[anyio.CapacityLimiter, Depends(bulk_limiter)]


def _submit(service: BulkService, body: bytes, path: str) -> BulkSummary:
    try:
        return service.submit(body, path)
    except TooManyRecords as exc:
        raise HTTPException(413, str(exc)) from None
    except ValidationError as exc:
        # No input echo: for a JSON syntax error pydantic's input is the whole body.
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(errors) from None


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
        return _submit(service, body, "async")


@router.get("/bulk/{submission_id}", responses={404: {"description": "Unknown or expired"}})
def bulk_result(submission_id: SubmissionId, service: Service) -> Response:
    """A stored result with its enriched lines, while it is in the cache."""
    document = service.result(submission_id)
    if document is None:
        raise HTTPException(404, "no such result (unknown or expired)")
    return Response(document, media_type="application/json")


@router.get("/products/{sku}", responses={404: {"description": "Unknown product"}})
def get_product(sku: Sku, service: Service) -> Product:
    """One product of the catalogue."""
    with database.connect(service.db_path) as conn:
        found = database.product(conn, sku)
    if found is None:
        raise HTTPException(404, f"no product {sku}")
    return Product(**found._asdict())
