"""A real service process, started the way users start it: `python -m app.launch`."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60.0)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(
        self, check: Callable[[str], bool], what: str, timeout: float = 30.0
    ) -> str:
        """The log once ``check`` holds for it: a test waits for the event it asserts, never
        for a time. Fails with ``what`` and the log when the server never logs it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if check(log):
                return log
            time.sleep(0.05)
        raise AssertionError(f"{what}: not logged within {timeout:g} s:\n{self.log()}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get("/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy within {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(
    tmp_path: Path, preexec_fn: Callable[[], None] | None = None, **env: str
) -> Server:
    """Launch on a free port with a fresh database; extra env as keyword arguments;
    ``preexec_fn`` runs in the child before it execs (a resource limit, a cgroup to join)."""
    port = free_port()
    token = secrets.token_hex(16)
    log_path = tmp_path / f"server-{port}.log"
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MEMORY_", "MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "PYTHONMALLOC"))
    }
    environ.update(
        HOST="127.0.0.1",
        PORT=str(port),
        ADMIN_TOKEN=token,
        DATABASE_PATH=str(tmp_path / "service.db"),
        ACCESS_LOG="0",
        PYTHONPATH=str(REPO),
    )
    environ.update(env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.launch"],
            cwd=tmp_path,
            env=environ,
            preexec_fn=preexec_fn,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", token, process, log_path)
    server.wait_healthy()
    return server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(preexec_fn: Callable[[], None] | None = None, **env: str) -> Server:
        server = start_server(tmp_path, preexec_fn, **env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
