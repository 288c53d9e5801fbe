"""The service on this machine as the verifier starts it, with the HTTP stack named.

LocalServer's environment (free port, temporary database, the profile, no settings inherited
from the shell), started through serve.py instead of app.launch: app.launch always names h11
on asyncio.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.verify.core.local import REPO_ROOT, LocalServer
from scripts.verify.stack.stacks import Stack

PROFILE = "glibc"  # glibc as shipped, the cleanup loop on: no allocator to tell the stacks apart
LIMIT_MB = 500.0
SERVICE_DEFAULT_SECONDS = 60.0  # cleanup interval; the cache TTL likewise, out of the run's way


class StackServer(LocalServer):
    """One server of ``stack``; start(), wait_healthy(), stop() as LocalServer's."""

    def __init__(self, stack: Stack, workdir: Path, log_path: Path) -> None:
        super().__init__(
            PROFILE,
            workdir,
            log_path,
            cleanup_interval_seconds=SERVICE_DEFAULT_SECONDS,
            cache_ttl_seconds=SERVICE_DEFAULT_SECONDS,
            limit_mb=LIMIT_MB,
            overrides={"ACCESS_LOG": "0"},
        )
        self.stack = stack

    def command(self) -> list[str]:
        serve = "scripts.verify.stack.serve"
        return [sys.executable, "-m", serve, self.stack.http, self.stack.loop]

    def start(self) -> StackServer:
        env = {**self.environment(), "PYTHONPATH": str(REPO_ROOT)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self
