"""The reply floor at the ASGI level, under real servers: a reader that takes its reply slower
than the floor has the reply ended and the connection closed, whatever server runs the app.

The memory package is copied into a project of its own (as a user lifts it), serving one stored
value of 4 MB through ``StoredResponse`` with a floor of 64 KB/s after 1 s. Plain uvicorn is run
on purpose, without app/edge's protocol: the floor here is the one every server gets. A slow
reader (a 4 KB receive buffer, 200 bytes every 0.2 s) is cut: the server logs one line for it,
and once the client then reads what is left, the reply ends short of the value. A reader that
keeps up reads the value whole. No timings are asserted beyond generous deadlines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.memory.conftest import free_port, lifted_package

REPO = Path(__file__).resolve().parents[2]
VALUE_BYTES = 4 * 2**20

MAIN = f'''
import logging
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from svc.memory import MB, CleanupConfig, MemoryManager, StoredResponse
from svc.memory.outbound import Outbound, ReplyFloor

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
VALUE = os.urandom({VALUE_BYTES})


def read(offset, size):
    return VALUE[offset : offset + size]


async def value(request):
    return StoredResponse(read, len(VALUE), "application/octet-stream")


async def healthz(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/value", value), Route("/healthz", healthz)])
floor = ReplyFloor(min_bytes_per_second=64 * 1024, grace_seconds=1.0)
memory = MemoryManager(
    CleanupConfig(), limit_bytes=4000 * MB, quiet_paths={{"/healthz"}},
    outbound=Outbound(floor=floor),
)
memory.install(app)
'''

SERVERS = {
    "uvicorn-h11": ["uvicorn", "svc.main:app", "--port", "{port}", "--http", "h11"],
    "uvicorn-httptools": ["uvicorn", "svc.main:app", "--port", "{port}", "--http", "httptools"],
    "granian": ["granian", "--interface", "asgi", "--port", "{port}", "--workers", "1",
                "svc.main:app"],
}
CUT_LINE = "reply cut after"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lifted_package(tmp_path_factory.mktemp("floor"), MAIN)


def serve(project: Path, name: str, log: Path) -> Iterator[int]:
    port = free_port()
    module, *args = SERVERS[name]
    argv = [sys.executable, "-m", module, *(a.format(port=port) for a in args)]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")},
        "PYTHONPATH": str(project),
    }
    with log.open("wb") as out:
        # A session of its own: Granian's worker outlives a killed parent otherwise.
        process = subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=out,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"{name} never answered /healthz: {log.read_text()[-2000:]}")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def slow_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /value HTTP/1.1\r\nHost: t\r\n\r\n")
    return sock


def read_slowly_until(sock: socket.socket, log: Path, seconds: float) -> int:
    """200 bytes every 0.2 s (1 KB/s) until the server's log shows the cut; bytes read."""
    sock.settimeout(5)
    total = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and CUT_LINE not in log.read_text():
        data = sock.recv(200)
        if not data:
            break
        total += len(data)
        time.sleep(0.2)
    return total


def read_rest(sock: socket.socket) -> int:
    """Everything the connection still gives, as fast as it comes, until it ends."""
    sock.settimeout(30)
    total = 0
    try:
        while data := sock.recv(65536):
            total += len(data)
    except (ConnectionResetError, TimeoutError):
        pass
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_reader_below_the_floor_has_its_reply_ended(
    project: Path, name: str, tmp_path: Path
) -> None:
    if shutil.which(SERVERS[name][0], path=os.path.dirname(sys.executable)) is None:
        pytest.skip(f"{SERVERS[name][0]} is not installed (dev lock, extra `servers`)")
    log = tmp_path / "server.log"
    for port in serve(project, name, log):
        whole = httpx.get(f"http://127.0.0.1:{port}/value", timeout=60)
        assert whole.status_code == 200 and len(whole.content) == VALUE_BYTES
        sock = slow_reader(port)
        try:
            read = read_slowly_until(sock, log, seconds=60)
            text = log.read_text()
            assert CUT_LINE in text, f"{name}: no cut after {read} bytes: {text[-2000:]}"
            read += read_rest(sock)
        finally:
            sock.close()
        assert read < VALUE_BYTES, f"{name}: the whole value went to a reader below the floor"
        [line] = [x for x in log.read_text().splitlines() if CUT_LINE in x]
        assert "GET /value" in line
        assert "Traceback" not in log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
