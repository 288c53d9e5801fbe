"""The status route: the manager's status as JSON, behind a bearer token, for operators and the
verifier (`python -m scripts.verify run --url`).

``MemoryManager.install(app, status_token=...)`` mounts it; without a token there is no route
at all (404), so a service that sets no token exposes nothing. A missing token gets 401, a wrong
one 403, compared in constant time on the exact bytes sent. The route is never in an OpenAPI
schema: Starlette only, nothing here imports FastAPI.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# A status source returns a mapping (a section of the JSON); a bare JSON value is taken too, for
# a service's one-word facts (this one's allocator profile name).
StatusValue = Mapping[str, object] | str | int | float | bool | None
StatusSource = Callable[[], StatusValue]


@dataclass(frozen=True)
class BearerRefusal:
    status_code: int  # 401 or 403
    detail: str
    headers: Mapping[str, str]


def check_bearer(authorization: str, token: bytes) -> BearerRefusal | None:
    """None when ``authorization`` carries ``token``, else the refusal to send."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return BearerRefusal(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
    # Starlette decodes header values as latin-1, so this is the bytes the client sent; no
    # .strip(): it would also drop U+00A0 and U+0085 and let a different value in.
    if not hmac.compare_digest(given.encode("latin-1"), token):
        return BearerRefusal(403, "wrong token", {})
    return None


def status_endpoint(
    token: bytes, document: Callable[[bool], dict[str, object]]
) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint: ``document(holdings)`` (blocking: it walks smaps) runs in a thread.

    ``?holdings=0`` leaves out the split of what the process holds (it walks gc's lists and
    pymalloc's arenas, and builds a list of every object): a reader that polls every second,
    as the verifier's --url sampler does, must not allocate in the service it measures."""

    async def status(request: Request) -> Response:
        refusal = check_bearer(request.headers.get("authorization", ""), token)
        if refusal is not None:
            return JSONResponse(
                {"detail": refusal.detail}, refusal.status_code, headers=dict(refusal.headers)
            )
        holdings = request.query_params.get("holdings", "1") != "0"
        return JSONResponse(await asyncio.to_thread(document, holdings))

    return status
