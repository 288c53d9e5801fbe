"""How each server the lifted package is run under takes sliced replies from slow readers.

The memory package is copied into a project of its own, serving one 10 MB value that is not
exact `bytes` (a view of a bytearray, as a buffer filled in place would be). 20 clients with small
receive buffers ask for it and read nothing; the growth of the server's process tree is measured
with replies whole and with replies sliced, in the same test. Whole, h11 joins such a body into a
new bytes per reply, and Granian and gunicorn's own ASGI worker copy every body they are handed,
while httptools hands the view to the transport as it is (gunicorn's UvicornWorker picks httptools
where it is installed, and `fastapi run` is uvicorn with it). Sliced,
every server holds a fraction of the value per reader. Ratios within one run, not absolute
figures.
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
import psutil
import pytest

from tests.memory.conftest import free_port, lifted_package

REPO = Path(__file__).resolve().parents[2]
READERS = 20
VALUE_MB = 10

MAIN = f'''
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from svc.memory import MB, CleanupConfig, MemoryManager

VALUE = bytearray(os.urandom({VALUE_MB} * MB))


async def value(request):
    return Response(memoryview(VALUE), media_type="application/octet-stream")


async def healthz(request):
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/value", value), Route("/healthz", healthz)])
memory = MemoryManager(CleanupConfig(), limit_bytes=4000 * MB, quiet_paths={{"/healthz"}})
memory.install(app, slice_replies=os.environ["SLICE"] == "1")
'''

COPIES_WHOLE = {  # does the server keep a copy of a whole reply per slow reader?
    "uvicorn-h11": True,
    "uvicorn-httptools": False,
    "gunicorn-uvicorn": False,
    "gunicorn-asgi": True,
    "granian": True,
}
SERVERS = {
    "uvicorn-h11": ["uvicorn", "svc.main:app", "--port", "{port}", "--http", "h11"],
    "uvicorn-httptools": ["uvicorn", "svc.main:app", "--port", "{port}", "--http", "httptools"],
    "gunicorn-uvicorn": ["gunicorn", "svc.main:app", "-k", "uvicorn_worker.UvicornWorker",
                         "-w", "1", "-b", "127.0.0.1:{port}"],
    "gunicorn-asgi": ["gunicorn", "svc.main:app", "-k", "asgi", "-w", "1",
                      "-b", "127.0.0.1:{port}"],
    "granian": ["granian", "--interface", "asgi", "--port", "{port}", "--workers", "1",
                "svc.main:app"],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lifted_package(tmp_path_factory.mktemp("sliced"), MAIN)


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def serve(project: Path, name: str, sliced: bool) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    module, *args = SERVERS[name]
    argv = [sys.executable, "-m", module, *(a.format(port=port) for a in args)]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")},
        "PYTHONPATH": str(project),
        "SLICE": "1" if sliced else "0",
    }
    # A session of its own: Granian's worker outlives a killed parent otherwise.
    process = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"{name} never answered /healthz")
        yield process, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def growth_per_reader(project: Path, name: str, sliced: bool) -> float:
    """Bytes the server's processes grew by per client that asked for the value and read nothing."""
    for process, port in serve(project, name, sliced):
        httpx.get(f"http://127.0.0.1:{port}/value", timeout=30)  # the first reply's one-offs
        time.sleep(1)
        before = tree_rss(process.pid)
        readers = []
        for _ in range(READERS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /value HTTP/1.1\r\nHost: t\r\n\r\n")
            readers.append(sock)
        time.sleep(5)
        grown = tree_rss(process.pid) - before
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        for sock in readers:
            sock.close()
        return grown / READERS
    raise AssertionError("not served")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_sliced_replies_hold_a_fraction_of_the_value_per_slow_reader(
    project: Path, name: str
) -> None:
    if shutil.which(SERVERS[name][0], path=os.path.dirname(sys.executable)) is None:
        pytest.skip(f"{SERVERS[name][0]} is not installed (dev lock, extra `servers`)")
    whole = growth_per_reader(project, name, sliced=False)
    sliced = growth_per_reader(project, name, sliced=True)
    value = VALUE_MB * 2**20
    # Whole, each reader keeps a copy of the value; sliced, at most a few slices on uvicorn and
    # about a megabyte on Granian (its own buffering of the slices it was handed).
    figures = f"{name}: {whole / 2**20:.1f} MB per reader whole, {sliced / 1024:.0f} KB sliced"
    if COPIES_WHOLE[name]:
        assert whole > 0.5 * value, figures
    else:
        assert whole < 0.15 * value, figures
    assert sliced < 0.15 * value, figures
