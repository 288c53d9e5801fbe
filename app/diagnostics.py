"""Health, metrics and the admin release; /debug/memory is the memory package's status route.

/admin/memory/release is on `admin_router`, which the app mounts only when ADMIN_TOKEN is set:
without a token every method gets 404, as if the route did not exist. With one, a missing token
gets 401 and a wrong one 403, by the same constant-time check as the status route. Neither is
ever in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.frame import FrameDep
from app.memory.status_route import check_bearer

router = APIRouter(tags=["diagnostics"])
admin_router = APIRouter(tags=["admin"], include_in_schema=False)
# Probes and operator calls are not traffic: a health check, a scrape or a verifier polling
# /debug/memory every second must not keep the service from ever looking idle.
QUIET_PATHS = frozenset({"/healthz", "/metrics", "/debug/memory", "/admin/memory/release"})

def require_admin(request: Request, frame: FrameDep) -> None:
    secret = frame.settings.admin_token
    if secret is None:  # admin_router mounted without a token: stay closed
        raise HTTPException(404, "Not Found")
    token = secret.get_secret_value().encode()
    refusal = check_bearer(request.headers.get("authorization", ""), token)
    if refusal is not None:
        raise HTTPException(refusal.status_code, refusal.detail, headers=dict(refusal.headers))


Admin = Annotated[None, Depends(require_admin)]


@router.head("/healthz", include_in_schema=False)  # one operation in the schema, not two
@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the event loop runs (HEAD too: health checkers send it)."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(frame: FrameDep) -> Response:
    """Prometheus metrics: memory, releases, and what the workloads register."""
    body = await asyncio.to_thread(generate_latest, frame.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@admin_router.post("/admin/memory/release")
async def admin_release(_: Admin, frame: FrameDep) -> dict[str, object]:
    """Run a release now (after one already running) and return its result."""
    result = await frame.memory.release("admin")
    return result.as_dict()
