"""What the service sends, under clients that read slowly or send slowly, on a real server: replies
in slices under flow control, the data-rate floors, the connection cap making room from the
slowest, and Qualys's `slowhttptest` in its three modes, inside a real 500 MB memory cgroup.

Needs root and a memory controller for the cgroup tests, and Debian's `slowhttptest` for the
attack tool; in CI both are required.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.run import large_body
from scripts.verify.overload.slowread import (
    HealthProbe,
    SlowReadSettings,
    run_slow_readers,
    store_results,
)
from tests.integration.conftest import Server

pytestmark = pytest.mark.slow
MB = 1024 * 1024
DEFAULT = "jemalloc-nopymalloc"
# The share of /healthz probes an attack must leave answered (the service alive for others).
MIN_HEALTH_SHARE = 0.95


def required(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the outbound tests: {reason}")
    pytest.skip(reason)


def cgroup_or_skip() -> MemoryCgroup:
    try:
        return MemoryCgroup(500).create()
    except RunNotMade as exc:
        required(str(exc))
        raise


Limited = Callable[..., tuple[Server, MemoryCgroup]]


@pytest.fixture
def limited(server_factory: Callable[..., Server]) -> Iterator[Limited]:
    """A server (default profile) started inside a fresh 500 MB memory cgroup."""
    started: list[tuple[Server, MemoryCgroup]] = []

    def start(**env: str) -> tuple[Server, MemoryCgroup]:
        cgroup = cgroup_or_skip()
        server = server_factory(preexec_fn=cgroup.join, MEMORY_PROFILE=DEFAULT, **env)
        started.append((server, cgroup))
        return server, cgroup

    yield start
    for server, cgroup in started:
        server.stop()
        cgroup.remove()


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def closed(server: Server, reason: str) -> int:
    text = server.client.get("/metrics").text
    found = re.search(rf'^edge_connections_closed_total\{{reason="{reason}"\}} ([0-9.e+]+)$',
                      text, re.M)
    assert found, f"edge_connections_closed_total{{reason={reason!r}}} not in /metrics"
    return int(float(found.group(1)))


@pytest.mark.parametrize(
    ("workers", "pipelined"), [(1, 1), (2, 1), (1, 4)], ids=["1-worker", "2-workers", "pipelined"]
)
def test_300_slow_readers_of_the_largest_result_hold_little(workers: int, pipelined: int) -> None:
    """The issue's case: 40 such readers grew the cgroup by ~230 MB, 100 OOM-killed it."""
    try:
        run = run_slow_readers(
            DEFAULT,
            SlowReadSettings(readers=300, seconds=30, pipelined=pipelined, web_concurrency=workers),
            large_body(),
        )
    except RunNotMade as exc:
        required(str(exc))
        raise
    figures = run.as_dict()
    assert run.oom_kills == 0 and run.alive, figures
    assert run.health_share >= 0.99, figures
    assert run.growth_bytes <= 100 * MB, figures
    assert run.whole_read_after, figures
    assert run.reply_bytes > 8 * MB, figures  # the largest result, as in the issue


def slow_socket(server: Server, request: bytes, receive_buffer: int = 4096) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port_of(server)))
    sock.sendall(request)
    return sock


def read_at(sock: socket.socket, bytes_per_second: int, seconds: float) -> tuple[bytes, bool]:
    """Read at about ``bytes_per_second`` for at most ``seconds``: (what came, cut short)."""
    sock.settimeout(0.1)
    got = bytearray()
    deadline = time.monotonic() + seconds
    step = max(1, bytes_per_second // 10)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(step)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(got), True
        if not data:
            return bytes(got), True
        got += data
        if b"\r\n\r\n" in got:
            head, _, body = bytes(got).partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.I)
            if length and len(body) >= int(length.group(1)):
                return bytes(got), False
        time.sleep(0.1)
    return bytes(got), False


def test_a_reader_below_the_floor_is_cut_and_one_above_it_gets_its_whole_reply(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(
        MEMORY_PROFILE=DEFAULT, MIN_RESPONSE_RATE_BYTES="20000", MIN_RATE_GRACE_SECONDS="2"
    )
    (result_id,) = store_results(server.url, large_body(records=500), 1)
    request = f"GET /bulk/{result_id} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    whole = server.client.get(f"/bulk/{result_id}").content
    assert len(whole) > 200_000  # several slices

    slow = slow_socket(server, request)
    got, cut = read_at(slow, 2_000, 6)  # the floor applies after 2 s of waiting on it
    assert closed(server, "slow_read") == 1
    rest, cut = read_at(slow, 10_000_000, 10)  # what loopback had queued, then the reset
    assert cut, "the connection of a reader under the floor stayed open"
    assert len(got + rest) < len(whole)

    fast = slow_socket(server, request)
    got, cut = read_at(fast, 200_000, 30)
    assert not cut
    assert got.partition(b"\r\n\r\n")[2] == whole
    assert closed(server, "slow_read") == 1
    assert "Traceback" not in server.log()


def test_a_body_sent_below_the_floor_gets_408(server_factory: Callable[..., Server]) -> None:
    server = server_factory(MIN_BODY_RATE_BYTES="1000", MIN_RATE_GRACE_SECONDS="2")
    sock = socket.create_connection(("127.0.0.1", port_of(server)))
    sock.sendall(
        b"POST /bulk/async HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 100000\r\n\r\n{"
    )
    sock.settimeout(0.5)
    reply = b""
    for _ in range(20):  # 10 bytes a second, for at most 10 s
        try:
            sock.sendall(b" " * 10)
            reply += sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if reply:
            break
    assert reply.startswith(b"HTTP/1.1 408"), reply
    # An admitted route's body: the gate's floor (any server) ends it, as a rule before the
    # edge's, which samples once a second (docs/overload.md).
    by_gate = server.log().count("body arrived slower than 1000 B/s")
    assert by_gate + closed(server, "slow_body") == 1
    assert server.client.get("/healthz").status_code == 200


def test_at_the_cap_the_slowest_sender_makes_room(server_factory: Callable[..., Server]) -> None:
    server = server_factory(MAX_CONNECTIONS="20", MIN_BODY_RATE_BYTES="1000",
                            MIN_RATE_GRACE_SECONDS="30", HEADER_TIMEOUT_SECONDS="30")
    head = (b"POST /bulk/async HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n{")
    senders = [socket.create_connection(("127.0.0.1", port_of(server))) for _ in range(20)]
    try:
        for sock in senders:
            sock.sendall(head)
        time.sleep(2.5)  # two samples of their rate: each below the floor, none past its grace
        with httpx.Client(base_url=server.url, timeout=5.0) as fresh:
            assert fresh.get("/healthz").status_code == 200
        assert closed(server, "evicted_slow") >= 1
        assert closed(server, "refused") == 0
    finally:
        for sock in senders:
            sock.close()


def slowhttptest(*args: str, seconds: int) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("slowhttptest")
    if tool is None:
        required("slowhttptest is not installed (Debian: apt-get install slowhttptest)")
    assert tool is not None
    return subprocess.run(
        [tool, *args, "-l", str(seconds)], capture_output=True, text=True,
        timeout=seconds + 60, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "mode",
    ["slow-read", "slow-body", "slowloris"],
)
def test_slowhttptest_leaves_the_service_alive_and_answering(
    limited: Limited, mode: str
) -> None:
    """Its own "service available" line counts a 503 as available: /healthz is probed here, from
    a process of its own, and must answer 200."""
    server, cgroup = limited()
    port = port_of(server)
    base = f"http://127.0.0.1:{port}"
    seconds = 30
    if mode == "slow-read":
        (result_id,) = store_results(server.url, large_body(), 1)
        args = ["-X", "-c", "200", "-r", "100", "-n", "1", "-z", "5", "-w", "16", "-y", "64",
                "-k", "2", "-u", f"{base}/bulk/{result_id}"]
    elif mode == "slow-body":
        args = ["-B", "-c", "1000", "-r", "200", "-i", "10", "-s", "8000000",
                "-t", "POST", "-f", "application/json", "-u", f"{base}/bulk/async"]
    else:
        args = ["-H", "-c", "1500", "-r", "300", "-i", "10", "-u", f"{base}/healthz"]
    probe = HealthProbe(port, seconds)
    probe.start()
    attack = slowhttptest(*args, seconds=seconds)
    health = probe.result()
    probes = len(health.latencies) + health.failures
    share = len(health.latencies) / probes if probes else 0.0
    assert server.process.poll() is None, server.log()[-2000:]
    assert cgroup.events().oom_kills == 0
    assert share >= MIN_HEALTH_SHARE, (share, probes, attack.stdout[-1500:])
    assert server.client.get("/healthz").status_code == 200
    assert "Traceback" not in server.log()
