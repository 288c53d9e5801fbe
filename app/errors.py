"""422 answers of bounded size: the first few errors, none of the input, and how many there were.

FastAPI's default handler returns every error with the `input` that failed: a 60 KB path
parameter comes back whole in the reply, and a body with 100,000 bad fields as 100,000 errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

SHOWN_ERRORS = 5
LOC_CHARS = 64  # a location part can be a key the client chose
MSG_CHARS = 200


class PartialValidationError(RequestValidationError):
    """A RequestValidationError that carries only the first errors of `total`, for a caller
    that stopped collecting them (building all of a huge body's errors costs memory)."""

    def __init__(self, errors: Sequence[Any], total: int) -> None:
        super().__init__(errors)
        self.total = total


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


def bounded_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One error with its type, location and message only (no `input`, `ctx` or `url`), each
    part cut to a bound."""
    loc = [
        part if isinstance(part, int) else _cut(str(part), LOC_CHARS)
        for part in error.get("loc", ())
    ]
    return {
        "type": _cut(str(error.get("type", "value_error")), LOC_CHARS),
        "loc": loc,
        "msg": _cut(str(error.get("msg", "invalid")), MSG_CHARS),
    }


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    errors = exc.errors()
    total = exc.total if isinstance(exc, PartialValidationError) else len(errors)
    return {
        "detail": [bounded_error(error) for error in errors[:SHOWN_ERRORS]],
        "error_count": max(total, len(errors)),
    }


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The app-wide handler for RequestValidationError (path, query, header and body)."""
    return JSONResponse(validation_body(exc), status_code=422)
