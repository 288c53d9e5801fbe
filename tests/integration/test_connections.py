"""The connection limits uvicorn lacks, on a real server: a deadline for request headers, and a
cap on open connections that makes room by closing the connection idle longest, so silent or
slow clients cannot take every descriptor and shut /healthz out."""

from __future__ import annotations

import re
import resource
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import Server


def silent(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def fresh_health(server: Server) -> int:
    """/healthz on a new connection: the server must accept one, not reuse a kept-alive one."""
    with httpx.Client(base_url=server.url, timeout=5) as client:
        return client.get("/healthz").status_code


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(server: Server, name: str, labels: str = "") -> float:
    text = server.client.get("/metrics").text
    found = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(HEADER_TIMEOUT_SECONDS="0.5")
    quiet = silent(server)
    assert closed_by_server(quiet, within=5)
    assert metric(server, "edge_connections_closed_total", '{reason="header_timeout"}') >= 1


def test_headers_sent_a_byte_at_a_time_do_not_outlast_the_deadline(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(HEADER_TIMEOUT_SECONDS="1")
    sock = silent(server)
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with pytest.raises(OSError):
        for byte in head:  # uvicorn's keep-alive timer never fires once bytes arrive
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
            if time.monotonic() - started > 8:
                pytest.fail("the server kept a slow header open past its deadline")
            if closed_by_server(sock, within=0.001):
                raise OSError("closed")
    assert time.monotonic() - started < 8


def test_at_the_cap_a_new_connection_closes_the_longest_idle_one(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(MAX_CONNECTIONS="10", HEADER_TIMEOUT_SECONDS="60")
    pile = [silent(server) for _ in range(30)]
    time.sleep(0.5)
    assert fresh_health(server) == 200
    closed = sum(closed_by_server(sock, within=0.5) for sock in pile)
    assert closed >= 20, f"only {closed} of 30 idle connections were closed at a cap of 10"
    assert metric(server, "edge_connections_closed_total", '{reason="evicted"}') >= 20
    for sock in pile:
        sock.close()


def test_silent_connections_past_the_descriptor_limit_do_not_stop_healthz(
    server_factory: Callable[..., Server],
) -> None:
    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    # The cap follows the descriptor limit (256 - 128 kept for the rest of the process).
    server = server_factory(preexec_fn=few_descriptors, HEADER_TIMEOUT_SECONDS="60")
    pile = [silent(server) for _ in range(400)]  # more than the server has descriptors
    time.sleep(1.0)
    answers = [fresh_health(server) for _ in range(5)]
    assert answers == [200] * 5
    assert server.process.poll() is None
    for sock in pile:
        sock.close()
