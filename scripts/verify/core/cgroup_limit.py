"""The memory cgroups a run is judged in, read through app/memory/cgroup.py on v1 and v2 alike.

`MemoryCgroup` is a real limit without a container: a cgroup made for one run. The kernel
enforces it as it does `docker run --memory` (which makes the same kind of cgroup): reclaim
first, then the OOM killer. Needs root and a memory controller: v1 at /sys/fs/cgroup/memory, or
v2 with `memory` in /sys/fs/cgroup/cgroup.subtree_control. `HostCgroup` reads a cgroup someone
else made (a container's, found from its pid). Anything that can read a cgroup is a
`CgroupSource`, so samples and the timeline's record are built the same way for all of them.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from app.memory.cgroup import CGROUP_ROOT, CgroupMemory, locate_cgroup, read_cgroup_at
from app.memory.measure import MB
from scripts.verify.core.cgroup_events import MemoryEvents, read_memory_events
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.kernel_peak import CgroupPeakFile
from scripts.verify.core.sampling import Sample


class CgroupSource(Protocol):
    """One memory cgroup, wherever its files are read from."""

    def read(self) -> CgroupMemory | None: ...

    def events(self) -> MemoryEvents: ...


def with_cgroup(sample: Sample, source: CgroupSource | None) -> Sample:
    """``sample`` with the cgroup's usage and working set, when there is a cgroup."""
    reading = source.read() if source is not None else None
    if reading is None:
        return sample
    return replace(
        sample,
        cgroup_usage_bytes=reading.usage_bytes,
        cgroup_working_set_bytes=reading.working_set_bytes,
    )


def record_of(source: CgroupSource, where: str) -> dict[str, Any]:
    """What the timeline keeps of the cgroup at the end of a run."""
    reading = source.read()
    events = source.events()
    return {
        "where": where,
        "version": reading.version if reading else None,
        "path": reading.path if reading else None,
        "limit_bytes": reading.limit_bytes if reading else None,
        "limit_hits": events.limit_hits,
        "oom_kills": events.oom_kills,
    }


class HostCgroup:
    """A memory cgroup folder this host can see, read in place."""

    def __init__(self, folder: Path, root: Path = CGROUP_ROOT) -> None:
        self.path = folder
        self.root = root
        self._peak: CgroupPeakFile | None = None

    @classmethod
    def of_pid(
        cls, pid: int, root: Path = CGROUP_ROOT, proc: Path = Path("/proc")
    ) -> HostCgroup | None:
        """The memory cgroup of a process, if this host can see its folder: a path it cannot
        see is None, never the mount the reader falls back to inside a namespace."""
        found = locate_cgroup(root, proc / str(pid) / "cgroup")
        if found is None or not str(found[0]).endswith(found[1].rstrip("/")):
            return None
        return cls(found[0], root)

    def read(self) -> CgroupMemory | None:
        return read_cgroup_at(self.path, self.root)

    def events(self) -> MemoryEvents:
        return read_memory_events(self.path)

    def peak_file(self) -> CgroupPeakFile:
        """The cgroup's high-water mark, readable and resettable (kernel_peak.py)."""
        if self._peak is None:
            self._peak = CgroupPeakFile(self.path)
        return self._peak

    def close_peak(self) -> None:
        if self._peak is not None:
            self._peak.close()
            self._peak = None


class ReadOnlyPeak:
    """The high-water mark of a cgroup read some other way (through the engine): read, never
    reset, so it covers the cgroup's whole life."""

    def __init__(self, source: CgroupSource) -> None:
        self.source = source

    def peak(self) -> int | None:
        reading = self.source.read()
        return reading.peak_bytes if reading is not None else None

    def reset_peak(self) -> bool:
        return False


class MemoryCgroup(HostCgroup):
    """A memory cgroup made with a limit, joined by the server before it execs, read every
    sample, removed at the end (the kernel refuses to remove it while a process is inside)."""

    def __init__(self, limit_mb: float, root: Path = CGROUP_ROOT) -> None:
        name = f"lean-memory-verify-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        super().__init__(root / name, root)
        self.limit_bytes = int(limit_mb * MB)

    def _limit_file(self) -> tuple[str, dict[str, str]]:
        """Where to make the cgroup, its limit file, and extra files to write where present:
        v1 if it is mounted, else v2 (no swap either way, as `--memory-swap` equal to the
        limit)."""
        v1 = self.root / "memory"
        if (v1 / "memory.limit_in_bytes").exists():
            self.path = v1 / self.path.name
            return "memory.limit_in_bytes", {"memory.memsw.limit_in_bytes": str(self.limit_bytes)}
        try:
            delegated = (self.root / "cgroup.subtree_control").read_text().split()
        except OSError:
            delegated = []
        if "memory" in delegated:
            return "memory.max", {"memory.swap.max": "0"}
        raise RunNotMade(
            f"--limit-mode cgroup needs a memory controller: cgroup v1 at {v1}, or v2 with "
            f"memory in {self.root / 'cgroup.subtree_control'}"
        )

    def create(self) -> MemoryCgroup:
        limit_file, extras = self._limit_file()
        if os.geteuid() != 0:
            raise RunNotMade("--limit-mode cgroup needs root (it makes a memory cgroup)")
        try:
            self.path.mkdir()
            (self.path / limit_file).write_text(str(self.limit_bytes))
            for name, value in extras.items():
                if (self.path / name).exists():
                    (self.path / name).write_text(value)
        except OSError as exc:
            self.remove()
            raise RunNotMade(f"cannot make memory cgroup {self.path}: {exc}") from exc
        return self

    def join(self) -> None:
        """Move the calling process in; used between fork and exec, so the server and all its
        workers start inside the limit."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone; retried briefly, as exiting processes
        leave it a moment after they are reaped."""
        self.close_peak()
        deadline = time.monotonic() + timeout
        while self.path.exists():
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
