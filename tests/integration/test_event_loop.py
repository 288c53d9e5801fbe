"""The event loop keeps answering while a large async submission runs on it.

Two real uvicorn servers on free ports, the same app with the bulk work in slices and in one
slice; each gets one 20,000-record `POST /bulk/async` while a thread probes `/healthz`. The
figure is the longest probe, as a ratio between the two within one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.workload.bulk import SLICE_RECORDS, WHOLE
from app.workload.load import payloads
from tests.integration.conftest import REPO, Server, free_port

JSON = {"content-type": "application/json"}
RECORDS = 20_000
PROBE_GAP_SECONDS = 0.005


def app_with_slices() -> FastAPI:
    """The service's app with BULK_TEST_SLICE_RECORDS records per slice (a uvicorn factory)."""
    app = create_app()
    app.state.bulk.service.slice_records = int(os.environ["BULK_TEST_SLICE_RECORDS"])
    return app


def start(tmp_path: Path, slice_records: int) -> Server:
    port = free_port()
    log_path = tmp_path / f"server-{slice_records}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "LD_PRELOAD"))}
    env.update(
        PYTHONPATH=str(REPO),
        DATABASE_PATH=str(tmp_path / f"service-{slice_records}.db"),
        MEMORY_CLEANUP="0",  # no release in the window: the loop's holds are the bulk work's
        BULK_TEST_SLICE_RECORDS=str(slice_records),
    )
    argv = [sys.executable, "-m", "uvicorn", f"{__name__}:app_with_slices", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=log)
    server = Server(f"http://127.0.0.1:{port}", "", process, log_path)
    server.wait_healthy()
    return server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[int, Server]]:
    started = {size: start(tmp_path, size) for size in (SLICE_RECORDS, WHOLE)}
    yield started
    for server in started.values():
        server.stop()


def longest_health_wait(server: Server, body: bytes) -> float:
    """Seconds of the slowest /healthz answered while one async submission ran."""
    waits: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            while not stop.is_set():
                sent = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                waits.append(time.perf_counter() - sent)
                time.sleep(PROBE_GAP_SECONDS)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.1)
    try:
        created = server.client.post("/bulk/async", content=body, headers=JSON)
    finally:
        stop.set()
        prober.join()
    assert created.status_code == 201, created.text
    assert created.json()["records"] == RECORDS
    return max(waits)


def test_sliced_async_submission_keeps_health_answering(servers: dict[int, Server]) -> None:
    body = payloads.body(RECORDS)
    for server in servers.values():  # the first submission of a process pays one-off costs
        assert server.client.post("/bulk/async", content=body, headers=JSON).status_code == 201
    sliced = longest_health_wait(servers[SLICE_RECORDS], body)
    whole = longest_health_wait(servers[WHOLE], body)
    assert sliced <= 0.5 * whole, f"sliced {sliced * 1000:.0f} ms, whole {whole * 1000:.0f} ms"
