"""Health, metrics, memory diagnostics and the admin release.

/debug/memory and /admin/* are on `admin_router`, which the app mounts only when ADMIN_TOKEN is
set: without a token every method gets 404, as if the routes did not exist. With one, a missing
token gets 401 and a wrong one 403, compared in constant time on the exact bytes sent. They are
never in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.memory import MemoryManager

router = APIRouter(tags=["diagnostics"])
admin_router = APIRouter(tags=["admin"], include_in_schema=False)
# Probes and operator calls are not traffic: a health check, a scrape or a verifier polling
# /debug/memory every second must not keep the service from ever looking idle.
QUIET_PATHS = frozenset({"/healthz", "/metrics", "/debug/memory", "/admin/memory/release"})


def require_admin(request: Request) -> None:
    token: bytes | None = request.app.state.admin_token
    if token is None:  # admin_router mounted without a token: stay closed
        raise HTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    # Starlette decodes header values as latin-1, so this is the bytes the client sent; no
    # .strip(): it would also drop U+00A0 and U+0085 and let a different value in.
    if not hmac.compare_digest(given.encode("latin-1"), token):
        raise HTTPException(403, "wrong token")


Admin = Annotated[None, Depends(require_admin)]


def manager(request: Request) -> MemoryManager:
    return request.app.state.memory  # type: ignore[no-any-return]


Manager = Annotated[MemoryManager, Depends(manager)]


@router.head("/healthz", include_in_schema=False)  # one operation in the schema, not two
@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the event loop runs (HEAD too: health checkers send it)."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: memory, releases, cache."""
    body = await asyncio.to_thread(generate_latest, request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@admin_router.get("/debug/memory")
async def debug_memory(_: Admin, memory: Manager, request: Request) -> dict[str, Any]:
    """RSS, the smaps breakdown, allocator, cgroup, recent releases, cleanup settings, identity."""
    report = await asyncio.to_thread(memory.status)
    stats = request.app.state.bulk.cache.stats()
    report["profile"] = request.app.state.profile
    report["cache"] = {
        "entries": stats.entries,
        "bytes": stats.bytes,
        "ttl_seconds": request.app.state.bulk.cache.ttl,
        "evictions": stats.evictions,  # dropped by the entry or byte bound before their TTL
        "expirations": stats.expirations,
    }
    return report


@admin_router.post("/admin/memory/release")
async def admin_release(_: Admin, memory: Manager) -> dict[str, object]:
    """Run a release now (after one already running) and return its result."""
    result = await memory.release("admin")
    return result.as_dict()
