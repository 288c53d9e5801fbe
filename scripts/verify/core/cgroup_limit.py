"""A real memory limit without a container: a cgroup v1 memory cgroup made for one run.

The kernel enforces ``memory.limit_in_bytes`` as it does for `docker run --memory` (which makes
the same kind of cgroup): reclaim first, then the OOM killer. Needs root and the v1 memory
controller mounted at /sys/fs/cgroup/memory.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from scripts.verify.core.errors import RunNotMade

V1_MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
MB = 1024 * 1024


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_stat(path: Path) -> dict[str, int]:
    stats: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stats[key] = int(value)
    except OSError:
        pass
    return stats


class MemoryCgroup:
    """One v1 memory cgroup: made with a limit, joined by the server before it execs, read every
    sample, removed at the end (the kernel refuses to remove it while a process is inside)."""

    def __init__(self, limit_mb: float, root: Path = V1_MEMORY_ROOT) -> None:
        self.limit_bytes = int(limit_mb * MB)
        self.path = root / f"lean-memory-verify-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._root = root
        self.owned = True

    @classmethod
    def existing(cls, folder: Path) -> MemoryCgroup:
        """A cgroup someone else made (a container's): read, never joined or removed."""
        cgroup = cls(0, folder.parent)
        cgroup.path = folder
        cgroup.limit_bytes = _read_int(folder / "memory.limit_in_bytes") or 0
        cgroup.owned = False
        return cgroup

    def create(self) -> MemoryCgroup:
        if not (self._root / "memory.limit_in_bytes").exists():
            raise RunNotMade(
                f"--limit-mode cgroup needs the cgroup v1 memory controller at {self._root}"
            )
        if os.geteuid() != 0:
            raise RunNotMade("--limit-mode cgroup needs root (it makes a memory cgroup)")
        try:
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
        except OSError as exc:
            self.remove()
            raise RunNotMade(f"cannot make memory cgroup {self.path}: {exc}") from exc
        return self

    def join(self) -> None:
        """Move the calling process in; used between fork and exec, so the server and all its
        workers start inside the limit."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def usage_bytes(self) -> int | None:
        return _read_int(self.path / "memory.usage_in_bytes")

    def working_set_bytes(self) -> int | None:
        """Usage minus inactive page cache, as `docker stats` computes it on cgroup v1."""
        usage = self.usage_bytes()
        if usage is None:
            return None
        inactive = _read_stat(self.path / "memory.stat").get("total_inactive_file", 0)
        return max(usage - inactive, 0)

    def oom_kills(self) -> int:
        """OOM kills inside the cgroup (memory.oom_control's oom_kill, kernel 4.13+)."""
        return _read_stat(self.path / "memory.oom_control").get("oom_kill", 0)

    def failcnt(self) -> int:
        return _read_int(self.path / "memory.failcnt") or 0

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone; retried briefly, as exiting processes
        leave it a moment after they are reaped."""
        if not self.owned:
            return
        deadline = time.monotonic() + timeout
        while self.path.exists():
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
