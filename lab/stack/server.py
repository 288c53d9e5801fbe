"""The service on this machine as the verifier starts it, with the HTTP stack named.

LocalServer's environment (free port, temporary database, the profile, no settings inherited
from the shell) and its one start; the command is serve.py, the launcher with ``--http`` and
``--loop`` changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lab.stack.stacks import Stack
from scripts.verify.core.local import LocalServer

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
        return [sys.executable, "-m", "lab.stack.serve", self.stack.http, self.stack.loop]
