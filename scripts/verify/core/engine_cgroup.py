"""A container's memory cgroup read through the engine, for hosts that cannot see it.

Docker Desktop runs containers in a VM, and a remote or rootless engine keeps their cgroups out
of reach too. There `docker exec` prints the container's own cgroup files (v1 and v2 names
alike; the missing ones are skipped), they are laid out in a scratch tree as the container sees
them, and app/memory/cgroup.py reads that tree exactly as the service reads its own cgroup.
`tail` is used because it is in every Debian-based image and costs about a megabyte inside the
limit it measures, where a Python process would cost tens.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from app.memory.cgroup import CgroupMemory, locate_cgroup, read_cgroup_at
from scripts.verify.core.cgroup_events import MemoryEvents, read_memory_events
from scripts.verify.core.docker_engine import Engine

PROC_SELF_CGROUP = "/proc/self/cgroup"
V2 = "/sys/fs/cgroup"
V1 = "/sys/fs/cgroup/memory"
FILES = (
    PROC_SELF_CGROUP,
    *(
        f"{V2}/{name}"
        for name in ("memory.max", "memory.current", "memory.peak", "memory.stat", "memory.events")
    ),
    *(
        f"{V1}/{name}"
        for name in (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "memory.max_usage_in_bytes",
            "memory.stat",
            "memory.oom_control",
            "memory.failcnt",
        )
    ),
)
HEADER = "==> "


def parse_dump(text: str) -> dict[str, str]:
    """`tail -n +1 FILE...` output, as {path: content}; files it could not open are absent."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(HEADER) and line.endswith(" <=="):
            current = files.setdefault(line[len(HEADER) : -len(" <==")], [])
        elif current is not None:
            current.append(line)
    return {path: "\n".join(lines).strip() + "\n" for path, lines in files.items()}


def write_tree(files: Mapping[str, str], scratch: Path) -> None:
    """The dumped files under ``scratch``, at their paths inside the container."""
    for path, content in files.items():
        target = scratch / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def read_dump(text: str, scratch: Path) -> tuple[CgroupMemory | None, MemoryEvents]:
    """The cgroup reading and event counts of one dump, read by the memory manager's reader."""
    shutil.rmtree(scratch, ignore_errors=True)
    write_tree(parse_dump(text), scratch)
    root = scratch / V2.lstrip("/")
    found = locate_cgroup(root, scratch / PROC_SELF_CGROUP.lstrip("/"))
    if found is None:
        return None, MemoryEvents(None, None)
    folder, path = found
    return read_cgroup_at(folder, root, path), read_memory_events(folder)


class EngineCgroup:
    """The cgroup of container ``name``, read with `docker exec` on every call."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.scratch = Path(tempfile.mkdtemp(prefix="lean-memory-cgroup-"))

    def dump(self) -> str:
        done = self.engine.run("exec", self.name, "tail", "-n", "+1", *FILES, check=False)
        return str(done.stdout)

    def read(self) -> CgroupMemory | None:
        return read_dump(self.dump(), self.scratch)[0]

    def events(self) -> MemoryEvents:
        return read_dump(self.dump(), self.scratch)[1]

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
