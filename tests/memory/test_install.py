"""The one wiring call: traffic counted, admission in front of admitted routes, the loop inside
the app's own lifespan; and the manager's lines shown where no one configured logging."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.memory import (
    MB,
    AdmissionConfig,
    CleanupConfig,
    MemoryManager,
    Readers,
    RouteCost,
    split_budget,
)
from app.memory.allocator import Allocator
from app.memory.logs import PACKAGE, show_logs
from tests.memory.conftest import REPO, allocator_free_environ


def make(**options: Any) -> MemoryManager:
    allocator = Allocator("glibc", None, "malloc_trim", lambda: True)
    readers = Readers(rss=lambda: 60 * MB, cgroup=lambda: None)
    return MemoryManager(CleanupConfig(), 512 * MB, allocator=allocator, readers=readers, **options)


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def test_install_runs_the_loop_inside_the_apps_own_lifespan() -> None:
    memory = make(quiet_paths={"/healthz"})
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.append(f"app up, loop running: {memory.loop.running}")
        yield
        seen.append(f"app down, loop running: {memory.loop.running}")

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/healthz", echo)],
                    lifespan=lifespan)
    memory.install(app)
    with TestClient(app) as client:
        assert memory.loop.running
        assert client.post("/echo", content=b"abc").json() == {"bytes": 3}
        client.get("/healthz")
    assert seen == ["app up, loop running: False", "app down, loop running: False"]
    assert not memory.loop.running
    assert memory.activity.requests == 1  # /healthz is quiet


def test_install_puts_admission_in_front_of_the_guarded_routes() -> None:
    memory = make()
    budget = split_budget(512 * MB, base_bytes=60 * MB, cache_bytes=0, inflight_bytes=1 * MB)
    route = RouteCost("POST", "/echo", cost_factor=4.0)
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    memory.install(app, AdmissionConfig(budget, [route], max_body_bytes=2 * MB))
    with TestClient(app) as client:
        assert client.post("/echo", content=b"x" * 1000).status_code == 200
        refused = client.post("/echo", content=b"x" * (MB // 2))  # 2 MB in flight > 1 MB
        assert refused.status_code == 503 and refused.json()["reason"] == "budget"
    assert memory.status().admission.rejections == {"budget": 1}  # type: ignore[union-attr]
    assert memory.activity.requests == 2  # the gate sits inside the traffic counter


def test_show_logs_only_where_nothing_would_print(monkeypatch: Any) -> None:
    root, package = logging.getLogger(), logging.getLogger(PACKAGE)
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(package, "handlers", [])
    assert show_logs() is True
    assert package.level == logging.INFO and len(package.handlers) == 1
    assert show_logs() is False  # once
    package.handlers.clear()
    root.handlers.append(logging.NullHandler())  # the service configured logging: it wins
    assert show_logs() is False and not package.handlers


def test_a_plain_process_prints_the_start_line_without_logging_setup() -> None:
    code = (
        "import asyncio\n"
        "from app.memory import MB, CleanupConfig, MemoryManager\n"
        "memory = MemoryManager(CleanupConfig(), 500 * MB)\n"
        "async def main():\n"
        "    memory.start()\n"
        "    await memory.stop()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=allocator_free_environ(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[memory] allocator " in done.stderr
    # Then what this setup can give back, in one line: here glibc, and pymalloc unless the
    # environment turned it off.
    assert "[memory] glibc with" in done.stderr and "pymalloc: a release returns" in done.stderr
    assert "[memory-cleanup] Background cleanup task running every 60s" in done.stderr
