"""The limit under load no polite client would send, on a real server inside a real 500 MB
memory cgroup (memory and memory+swap): floods of large valid bodies, bodies that are all
errors, clients that stall or leave mid-body. The service must refuse what it cannot hold, with
503 and Retry-After, and stay alive and answering /healthz.

Needs root and a memory controller (the verifier's cgroup mode); in CI that is required.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.cost import BodyShape, body_of, run_cost
from scripts.verify.overload.flood import post, probe_health
from scripts.verify.overload.run import OverloadSettings, run_overload
from tests.integration.conftest import Server

pytestmark = pytest.mark.slow
ALLOWED = {201, 413, 429, 503}
MB = 1024 * 1024


def cgroup_or_skip(limit_mb: float = 500) -> MemoryCgroup:
    try:
        return MemoryCgroup(limit_mb).create()
    except RunNotMade as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the overload tests: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def limited(server_factory: Callable[..., Server]) -> Iterator[Callable[..., Server]]:
    """A server started inside a fresh 500 MB memory cgroup."""
    started: list[tuple[Server, MemoryCgroup]] = []

    def start(**env: str) -> Server:
        cgroup = cgroup_or_skip()
        server = server_factory(preexec_fn=cgroup.join, **env)
        started.append((server, cgroup))
        return server

    yield start
    for server, cgroup in started:  # the kernel removes a cgroup only once its processes are gone
        server.stop()
        cgroup.remove()


def reserved(server: Server) -> float:
    text = server.client.get("/metrics").text
    found = re.search(r"^memory_admission_reserved_bytes ([0-9.e+]+)$", text, re.M)
    assert found, "memory_admission_reserved_bytes not in /metrics"
    return float(found.group(1))


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_flood_of_large_valid_bodies_is_shed_not_oom_killed(chunked: bool) -> None:
    try:
        run = run_overload(
            "jemalloc-nopymalloc", OverloadSettings(clients=64, seconds=30, chunked=chunked)
        )
    except RunNotMade as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the overload tests: {exc}")
        pytest.skip(str(exc))
    figures = run.as_dict()
    assert run.oom_kills == 0 and run.alive, figures
    assert set(run.flood.statuses) <= ALLOWED, figures
    assert run.flood.error_share < 0.01, figures
    assert run.flood.goodput > 0, figures
    assert run.flood.retry_after_missing == 0, figures
    assert run.health.failures == 0 and len(run.health.latencies) > 100, figures  # answering
    assert run.peak_working_set_bytes < 500 * MB, figures
    assert run.reserved_after_bytes == 0, figures


def test_bodies_that_are_all_errors_cost_no_more_than_their_size(
    limited: Callable[..., Server],
) -> None:
    server = limited()
    host, port = address(server)
    invalid = b'{"records":[' + b",".join([b'{"a":1}'] * 20_000) + b"]}"
    assert 150_000 < len(invalid) < 170_000
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def four_at_once() -> tuple[list[object], float]:
        stop = asyncio.Event()
        health = asyncio.create_task(probe_health(host, port, stop, every=0.05))
        paths = ["/bulk/sync", "/bulk/async"] * 2
        replies = await asyncio.gather(*(post(host, port, p, invalid) for p in paths))
        stop.set()
        return list(replies), (await health).worst

    try:
        replies, worst_health = asyncio.run(four_at_once())
    finally:
        done.set()
        sampler.join()
    assert [r.status for r in replies] == [422] * 4  # type: ignore[attr-defined]
    assert all(len(r.body) <= 64 * 1024 for r in replies)  # type: ignore[attr-defined]
    assert all(b'"error_count":100000' in r.body for r in replies)  # type: ignore[attr-defined]
    assert peak[0] - before <= 50 * MB, f"RSS grew {(peak[0] - before) / MB:.1f} MB"
    assert worst_health < 1.0


def test_stalled_bodies_are_timed_out_and_their_reservations_returned(
    limited: Callable[..., Server],
) -> None:
    server = limited(BODY_TIMEOUT_SECONDS="1")
    head = (
        b"POST /bulk/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000000\r\n\r\n" + b'{"records":[' + b" " * 1000
    )
    stalled = []
    for _ in range(8):
        sock = socket.create_connection(address(server), timeout=10)
        sock.sendall(head)
        stalled.append(sock)
    # The stalled bodies hold their reservations meanwhile: wait for the server to take them,
    # never for a time (a busy machine may take longer than any fixed sleep).
    deadline = time.monotonic() + 10
    held = reserved(server)
    while held == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        held = reserved(server)
    assert held > 0
    replies = [sock.recv(4096) for sock in stalled]
    assert all(reply.startswith(b"HTTP/1.1 408 ") for reply in replies), replies[0][:200]
    assert reserved(server) == 0
    for sock in stalled:
        sock.close()


def test_clients_gone_mid_body_leave_nothing_reserved_and_no_traceback(
    limited: Callable[..., Server],
) -> None:
    server = limited()
    for _ in range(20):
        sock = socket.create_connection(address(server), timeout=10)
        sock.sendall(
            b"POST /bulk/async HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\n\r\n{"
        )
        sock.close()
    # The server may not have taken these connections yet when the client has closed them all:
    # wait for its word on each, then nothing may be left reserved.
    gone = "client disconnected after 1 body bytes"
    deadline = time.monotonic() + 10
    while server.log().count(gone) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert log.count(gone) == 20
    assert reserved(server) == 0
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_one_submission_s_cost_is_measured_on_the_server_that_took_it() -> None:
    """The body-cost run on a real server: the peak it reads is the worker's, reset just before
    the request, so it holds at least the body once; a refusal is no measurement."""
    cgroup_or_skip().remove()  # skip, or fail in CI, where no memory controller can be had
    shape = BodyShape(5_000, 300)
    run = run_cost("jemalloc-nopymalloc", shape, 500, {}, None)
    assert run.status == 201
    assert run.growth_bytes >= len(body_of(shape)), run.as_dict()
    assert run.growth_bytes < 500 * MB
    with pytest.raises(RunNotMade, match="413"):
        run_cost("jemalloc-nopymalloc", shape, 500, {"MAX_BODY_MB": "1"}, None)
