"""app.serve: uvicorn's command line, exiting 3 when a worker could not start.

Real processes: uvicorn's supervisor with two workers, an app whose startup raises, and one that
starts. uvicorn's own exit status is shown beside ours, so an uvicorn that fixes it fails the
first test, and app/serve.py can go.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.serve import exit_status
from tests.app.conftest import REPO, service_free_environ
from tests.integration.conftest import free_port

FAILING = f"{__name__}:failing_app"
STARTING = f"{__name__}:starting_app"


@asynccontextmanager
async def cannot_start(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("the database is not there")
    yield  # pragma: no cover


def failing_app() -> Starlette:
    return Starlette(lifespan=cannot_start)


def starting_app() -> Starlette:
    return Starlette(routes=[Route("/healthz", lambda request: PlainTextResponse("ok"))])


def serve(module: str, factory: str, port: int, tmp_path: Path) -> subprocess.Popen[str]:
    environ = service_free_environ()
    environ["PYTHONPATH"] = str(REPO)
    log = open(tmp_path / f"{module}.log", "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(
        [sys.executable, "-m", module, factory, "--factory", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=environ, stdout=log, stderr=subprocess.STDOUT, text=True,
    )


def test_a_worker_that_cannot_start_ends_the_service_with_status_3(tmp_path: Path) -> None:
    uvicorn = serve("uvicorn", FAILING, free_port(), tmp_path)
    ours = serve("app.serve", FAILING, free_port(), tmp_path)
    assert uvicorn.wait(timeout=60) == 0  # uvicorn's supervisor: a failed start, exit 0
    assert ours.wait(timeout=60) == 3
    log = (tmp_path / "app.serve.log").read_text()
    assert "A worker failed to start: exiting with status 3" in log


def test_a_service_that_started_still_stops_with_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    ours = serve("app.serve", STARTING, port, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).text == "ok":
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "app.serve.log").read_text())
        ours.send_signal(signal.SIGTERM)
        assert ours.wait(timeout=30) == 0
    finally:
        if ours.poll() is None:
            ours.kill()
            ours.wait()


def test_only_a_success_after_a_failed_start_is_changed() -> None:
    assert exit_status(0, worker_failed_to_start=True) == 3
    assert exit_status(None, worker_failed_to_start=True) == 3
    assert exit_status(0, worker_failed_to_start=False) == 0
    assert exit_status(2, worker_failed_to_start=True) == 2  # a usage error stays what it was
