"""The service as users run it: `python -m app.launch`, a real uvicorn on a free port."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from tests.integration.conftest import REPO, Server
from tests.integration.test_memory import bulk_body

JSON = {"content-type": "application/json"}


def wait_for_log(server: Server, text: str, timeout: float = 20.0) -> str:
    return server.wait_for_log(lambda log: text in log, repr(text), timeout)


def test_serves_health_metrics_and_bulk(server_factory) -> None:
    server = server_factory(MEMORY_PROFILE="glibc")
    assert server.client.get("/healthz").json() == {"status": "ok"}
    created = server.client.post("/bulk/async", content=bulk_body(500, 1), headers=JSON)
    assert created.status_code == 201
    summary = created.json()
    stored = server.client.get(f"/bulk/{summary['id']}").json()
    assert stored["records"] == 500 and len(stored["lines"]) == 500
    metrics = server.client.get("/metrics").text
    assert "memory_rss_bytes" in metrics and "bulk_cache_entries 1.0" in metrics


def test_admin_surface_is_closed_without_a_token(server_factory) -> None:
    server = server_factory(ADMIN_TOKEN="")
    assert server.client.get("/debug/memory").status_code == 404
    assert server.client.post("/admin/memory/release").status_code == 404


def test_admin_surface_checks_the_token(server_factory) -> None:
    server = server_factory()
    assert server.client.get("/debug/memory").status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * len(server.token)}
    assert server.client.get("/debug/memory", headers=wrong).status_code == 403
    report = server.client.get("/debug/memory", headers=server.auth).json()
    assert report["pid"] == server.process.pid
    assert server.token not in server.log()


def test_oversized_body_is_refused_while_streaming(server_factory) -> None:
    server = server_factory(MAX_BODY_MB="1")

    def chunks():  # no Content-Length: the server must count as the body arrives
        yield b'{"records": ['
        for _ in range(40):
            yield b'{"sku": "SKU-00001", "quantity": 1, "unit_price": 1.0, "customer": "c", ' \
                  b'"note": "' + b"x" * 30_000 + b'"},'
        yield b"]}"

    response = server.client.post("/bulk/sync", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert "MAX_BODY_MB" in response.json()["detail"]
    assert server.client.get("/healthz").status_code == 200


def test_idle_release_follows_a_spike(server_factory) -> None:
    server = server_factory(
        MEMORY_PROFILE="glibc",
        MEMORY_CLEANUP_INTERVAL="3600",
        MEMORY_IDLE_RELEASE_SECONDS="1",
        MEMORY_CLEANUP_THRESHOLD_MB="1",
    )
    wait_for_log(server, "Background cleanup task running every 3600s")
    for path in ("/bulk/sync", "/bulk/async"):
        assert server.client.post(path, content=bulk_body(5000, 2), headers=JSON).status_code == 201
    log = wait_for_log(server, "(idle)")
    assert "Running idle cleanup" in log
    assert "malloc_trim: ok" in log


def test_sigterm_stops_within_seconds(server_factory) -> None:
    server = server_factory(MEMORY_CLEANUP_INTERVAL="3600")
    wait_for_log(server, "Background cleanup task running")
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(10)
    elapsed = time.monotonic() - started
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status says why.
    assert code in (0, -signal.SIGTERM)
    assert elapsed < 3.0, f"shutdown took {elapsed:.1f}s"
    log = server.log()
    assert "[memory-cleanup] Stopped" in log and "Application shutdown complete" in log


def test_bad_configuration_stops_startup_with_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.launch"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "MEMORY_CLEANUP_INTERVAL": "abc"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: MEMORY_CLEANUP_INTERVAL='abc'")


def test_unreachable_port_is_not_served(server_factory) -> None:
    server = server_factory()
    server.stop()
    try:
        httpx.get(server.url + "/healthz", timeout=1.0)
    except httpx.TransportError:
        return
    raise AssertionError("server still answering after stop")
