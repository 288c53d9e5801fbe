"""The service as deployed: the image's dual-stack bind, and LIMIT_MAX_REQUESTS under the launcher.

Real `python -m app.launch` processes on free ports. The image binds HOST=:: so that Railway's
IPv6-only private network and its IPv4 edge both reach it; uvicorn with one worker ends the
whole server with exit status 0 at LIMIT_MAX_REQUESTS, which an ON_FAILURE restart policy does
not restart, so the launcher refuses that, and with two workers a recycled worker is replaced.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import REPO, start_server


def image_host() -> str:
    """The HOST the Dockerfile's runtime stage sets."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return parser.envs["HOST"]


def test_image_binds_every_address_of_both_families() -> None:
    assert image_host() == "::"


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def serves_both_families() -> bool:
    """Linux maps IPv4 onto a `::` socket unless net.ipv6.bindv6only says otherwise."""
    try:
        return Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() == "0"
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.skipif(not serves_both_families(), reason="net.ipv6.bindv6only=1 here")
@pytest.mark.parametrize("workers", ["1", "2"])  # uvicorn binds differently with one worker
def test_bind_to_any_address_serves_ipv4_and_ipv6(tmp_path: Path, workers: str) -> None:
    # start_server waits for /healthz over 127.0.0.1
    server = start_server(tmp_path, HOST=image_host(), WEB_CONCURRENCY=workers)
    try:
        port = server.url.rsplit(":", 1)[1]
        for url in (f"http://127.0.0.1:{port}/healthz", f"http://[::1]:{port}/healthz"):
            response = httpx.get(url, timeout=5)
            assert response.status_code == 200, url
            assert response.json() == {"status": "ok"}
        assert "on :::" in server.log()  # the launcher's line names the address it bound
    finally:
        server.stop()


def test_request_limit_with_one_worker_stops_startup(tmp_path: Path) -> None:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "LIMIT_", "WEB_"))
    }
    environ.update(
        PYTHONPATH=str(REPO), MEMORY_PROFILE="glibc", LIMIT_MAX_REQUESTS="3", WEB_CONCURRENCY="1"
    )
    done = subprocess.run(
        [sys.executable, "-m", "app.launch"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("configuration error: LIMIT_MAX_REQUESTS=3 needs WEB_CONCURRENCY >= 2")


def test_request_limit_with_two_workers_replaces_the_worker(tmp_path: Path) -> None:
    """Each worker exits after 3 requests; the server answers all 20 and keeps running."""
    server = start_server(
        tmp_path, MEMORY_PROFILE="glibc", LIMIT_MAX_REQUESTS="3", WEB_CONCURRENCY="2"
    )
    try:
        statuses = []
        for _ in range(20):
            for _attempt in range(50):  # a fresh connection lands on a worker still accepting
                try:
                    statuses.append(httpx.get(f"{server.url}/healthz", timeout=5).status_code)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        assert statuses == [200] * 20
        assert server.process.poll() is None, server.log()

        # A worker may take a few more than 3 before its next check: count exits, not requests.
        # The supervisor logs a replacement's start after the exit, so wait for those lines.
        def exits(log: str) -> int:
            return log.count("Maximum request limit of 3 exceeded")

        def replaced(log: str) -> bool:
            return exits(log) >= 2 and log.count("Started server process") >= 2 + exits(log)

        server.wait_for_log(replaced, "two workers exited and each was replaced")
    finally:
        assert server.stop() == 0


def test_request_head_is_bounded_by_the_http_stack_shipped(tmp_path: Path) -> None:
    """h11 (the stack kept, lab/stack/README.md) refuses a 1 MB header after its 16 KB cap,
    instead of parsing it whole as httptools would; /healthz is answered right after."""
    server = start_server(tmp_path, MEMORY_PROFILE="glibc")
    try:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 1024 * 1024:
                    sock.sendall(b"A" * 16384)
                    sent += 16384
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: the bound at work
            reply = b""
            try:
                while chunk := sock.recv(4096):
                    reply += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        assert not reply.startswith(b"HTTP/1.1 200"), reply[:100]
        assert reply == b"" or reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), reply[:100]
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()
