"""The typed status and its route: the JSON keys are a contract, the route is mounted by one
call, token-protected, hidden from the schema, and a service adds its own sections to it."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.memory import MB, CleanupConfig, MemoryManager, MemoryStatus, Readers
from app.memory.allocator import Allocator
from app.memory.cgroup import CgroupMemory
from app.memory.document import NotAStatus, read_status, section

TOKEN = "0123456789abcdef0123"
# Every key /debug/memory had when the status was a dict: the verifier and its recorded
# fixtures read them, so none may go or move.
KEYS = [
    "pid", "rss_bytes", "uss_bytes", "pss_bytes", "replica_id", "limit_mb", "cgroup",
    "allocator", "interpreter", "budget", "admission", "outbound", "breakdown", "releases",
    "release_totals", "cleanup", "cgroup_note", "holdings", "holdings_advice", "door",
]
CLEANUP_KEYS = [
    "enabled", "running", "interval_seconds", "threshold_bytes", "idle_release_seconds",
    "release_min_bytes", "runs", "failures", "requests_seen",
]


def make(**options: Any) -> MemoryManager:
    allocator = Allocator("glibc", None, "malloc_trim", lambda: True)
    readers = Readers(rss=lambda: 60 * MB, cgroup=lambda: None)
    return MemoryManager(CleanupConfig(), 512 * MB, allocator=allocator, readers=readers, **options)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def test_status_is_frozen_and_its_json_keeps_every_key() -> None:
    memory = make(replica_id="r-1")
    memory.releaser.release("admin")
    status = memory.status(detail=False)
    assert isinstance(status, MemoryStatus)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.rss_bytes = 1  # type: ignore[misc]  # the point: a frozen dataclass refuses it
    document = status.as_dict()
    assert list(document) == KEYS
    assert list(document["cleanup"]) == CLEANUP_KEYS  # type: ignore[call-overload]
    assert document["limit_mb"] == 512 and status.limit_bytes == 512 * MB
    assert document["rss_bytes"] == 60 * MB and document["breakdown"] is None
    assert document["holdings"] is None  # the split walks arenas and gc's lists: detail only
    assert document["release_totals"] == {
        "freed_bytes": 0,
        "by_outcome": [{"trigger": "admin", "outcome": "ok", "count": 1}],
    }


def test_no_token_no_route() -> None:
    memory = make()
    app = Starlette(routes=[Route("/ping", ping)])
    memory.install(app)
    with TestClient(app) as client:
        assert client.get("/debug/memory", headers=bearer(TOKEN)).status_code == 404


def test_the_route_wants_the_token() -> None:
    memory = make()
    app = Starlette(routes=[Route("/ping", ping)])
    memory.install(app, status_token=TOKEN, status_path="/ops/memory")
    with TestClient(app) as client:
        missing = client.get("/ops/memory")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.get("/ops/memory", headers=bearer(TOKEN[:-1] + "x")).status_code == 403
        found = client.get("/ops/memory", headers=bearer(TOKEN))
        assert found.status_code == 200
        assert list(found.json())[: len(KEYS)] == KEYS
        assert found.json()["breakdown"] is not None  # the detail, walked off the loop
        assert found.json()["holdings"]["gc_objects"] > 0  # and the split of what it holds
        polled = client.get("/ops/memory?holdings=0", headers=bearer(TOKEN)).json()
        assert polled["holdings"] is None and polled["breakdown"] is not None
        client.get("/ping")
        assert memory.activity.requests == 1  # polling the status is not traffic


def test_sources_appear_under_their_names_read_off_the_loop() -> None:
    memory = make()
    threads: list[str] = []

    def cache() -> dict[str, object]:
        threads.append(threading.current_thread().name)
        return {"entries": 3}

    memory.add_status_source("cache", cache)
    memory.add_status_source("profile", lambda: "glibc")
    with pytest.raises(ValueError, match="already has"):
        memory.add_status_source("rss_bytes", lambda: {})
    app = Starlette()
    memory.install(app, status_token=TOKEN)
    with TestClient(app) as client:
        document = client.get("/debug/memory", headers=bearer(TOKEN)).json()
    assert (document["cache"], document["profile"]) == ({"entries": 3}, "glibc")
    assert threads and threads[0] != threading.main_thread().name


def test_a_broken_source_does_not_hide_the_figures() -> None:
    memory = make()
    memory.add_status_source("cache", lambda: {}[0])  # raises KeyError
    document = memory.status_document()
    assert document["cache"] == {"error": "KeyError: 0"}
    assert document["pid"] and document["releases"] == []


def test_the_route_is_not_in_a_fastapi_schema() -> None:
    memory = make()
    app = FastAPI()
    memory.install(app, status_token=TOKEN)
    with TestClient(app) as client:
        assert client.get("/debug/memory", headers=bearer(TOKEN)).status_code == 200
        assert "/debug/memory" not in client.get("/openapi.json").json()["paths"]


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        make().install(Starlette(), status_token="")


def test_a_cgroup_without_a_limit_of_its_own_is_named_not_reported() -> None:
    """Outside a container with a limit the cgroup found is an enclosing group's (a desktop
    session, a host): its usage is not this service's."""
    allocator = Allocator("glibc", None, "malloc_trim", lambda: True)

    def status_with(limit: int | None) -> MemoryStatus:
        reading = CgroupMemory(1, "/user.slice", limit, 805 * MB, 700 * MB, 900 * MB)
        readers = Readers(rss=lambda: 60 * MB, cgroup=lambda: reading)
        manager = MemoryManager(CleanupConfig(), 512 * MB, allocator=allocator, readers=readers)
        return manager.status(detail=False)

    enclosing = status_with(None)
    assert enclosing.cgroup is None
    assert enclosing.cgroup_note is not None
    assert "no memory limit of its own" in enclosing.cgroup_note
    assert "/user.slice" in enclosing.cgroup_note
    own = status_with(512 * MB)
    assert own.cgroup is not None and own.cgroup.usage_bytes == 805 * MB
    assert own.cgroup.peak_bytes == 900 * MB and own.cgroup_note is None


def test_the_served_document_reads_back_as_the_status_and_others_do_not() -> None:
    """read_status is what a reader of a deployed route (the verifier) parses with."""
    memory = make(replica_id="r-1")
    memory.add_status_source("jobs", lambda: {"count": 2})
    raw = json.loads(json.dumps(memory.status_document()))
    document = read_status(raw)
    assert document["cleanup"]["interval_seconds"] == CleanupConfig().interval_seconds
    assert document["allocator"]["name"] == "glibc" and document["replica_id"] == "r-1"
    assert section(document, "jobs") == {"count": 2} and section(document, "none") == {}
    held = document["holdings"]  # the split, read in this process
    assert held is not None and held["gc_objects"] > 0 and held["file_bytes"]
    assert document["holdings_advice"]
    for other, why in (([], "not an object"), ({"pid": 1}, "'allocator'"), ({}, "'pid'")):
        with pytest.raises(NotAStatus, match=why):
            read_status(other)
