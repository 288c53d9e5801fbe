"""What every service the verifier starts has in common, here or in a container, ours or the
user's: a loopback port, a random token for its status route, the settings it is started with,
and the same health wait, status read and release count."""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from app.memory.document import NotAStatus, StatusDocument, read_status
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.stayed import Split, read_split

HEALTH_PATH = "/healthz"
# Where the memory package's status route is mounted: memory.install(app, status_token=...)
# serves it here by default, and this service serves it as its /debug/memory.
STATUS_PATH = "/debug/memory"


def free_port() -> int:
    """A port the kernel just handed out on loopback; the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET to loopback or the given --url; an HTTP error is an answer."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Served:
    """A service started for one run. Subclasses say how it runs: ``failure()`` (None while it
    runs) and ``log_tail()`` (the last lines it logged, for a reason)."""

    kind = "server"
    health_path = HEALTH_PATH
    status_path = STATUS_PATH

    def __init__(
        self,
        profile: str,
        log_path: Path,
        cleanup_interval_seconds: float,
        cache_ttl_seconds: float,
        limit_mb: float,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.profile = profile
        self.log_path = log_path
        self.cleanup_interval_seconds = cleanup_interval_seconds
        self.cache_ttl_seconds = cache_ttl_seconds
        self.limit_mb = limit_mb
        self.overrides = dict(overrides or {})
        self.port = free_port()
        self.token = secrets.token_hex(16)

    def preset_settings(self) -> dict[str, str]:
        """What the preset changes on the service, by the names it reads: the cleanup interval
        (two of them must fit in the idle window) and how long cached results live."""
        return {
            "MEMORY_CLEANUP_INTERVAL": f"{self.cleanup_interval_seconds:g}",
            "CACHE_TTL_SECONDS": f"{self.cache_ttl_seconds:g}",
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def failure(self) -> str | None:
        raise NotImplementedError

    def log_tail(self, lines: int = 3) -> str:
        raise NotImplementedError

    def wait_healthy(self, timeout: float) -> None:
        """Poll the health path until 200; RunNotMade if the service ends or the deadline
        passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (why := self.failure()) is not None:
                raise RunNotMade(f"{why} before it was healthy: {self.log_tail()}")
            try:
                if http_get(f"{self.base_url}{self.health_path}", timeout=2.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RunNotMade(f"{self.kind} not healthy within {timeout:g} s: {self.log_tail()}")

    def memory_status(self) -> StatusDocument | None:
        """The memory package's own view (its status route): allocator, limit, releases; None
        where the service does not mount the route, refuses the token, or answers something
        else."""
        try:
            status, body = http_get(f"{self.base_url}{self.status_path}", self.token)
        except OSError:
            return None
        if status != 200:
            return None
        try:
            return read_status(json.loads(body))
        except (ValueError, NotAStatus):
            return None

    def pids(self) -> list[int]:
        """The service's processes as this host sees them; none where it cannot."""
        return []

    def split(self) -> Split | None:
        """What the service holds, by part: its status route's split, else /proc's."""
        return read_split(self.memory_status, self.pids)

    def release_lines(self) -> int:
        """How many "Memory Release:" lines the service logged."""
        try:
            return self.log_path.read_text(errors="replace").count("Memory Release:")
        except OSError:
            return 0
