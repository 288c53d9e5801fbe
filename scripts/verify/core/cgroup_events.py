"""What a limit did to a run: how often its cgroup hit the limit and had a process OOM-killed.

The verifier's own reading, kept out of app/memory: a service reads its usage and limit to decide
when to release (app/memory/cgroup.py), while these counts only judge a run afterwards. The files
are the kernel's: v2 memory.events (`max`, `oom_kill`), v1 memory.failcnt and memory.oom_control.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MemoryEvents:
    """Counts since the cgroup was made; ``None`` where the kernel does not keep them."""

    oom_kills: int | None  # v2 memory.events oom_kill; v1 memory.oom_control oom_kill (4.13+)
    limit_hits: int | None  # v2 memory.events max; v1 memory.failcnt


def _counts(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("name value" per line) as numbers; {} where it is unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.partition(" ")[::2] for line in lines)
    return {key: int(value) for key, value in pairs if value.strip().isdigit()}


def _count(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_memory_events(folder: Path) -> MemoryEvents:
    """How often the cgroup at ``folder`` hit its limit and had a process OOM-killed."""
    if (folder / "memory.limit_in_bytes").exists():  # v1
        oom = _counts(folder / "memory.oom_control").get("oom_kill")
        return MemoryEvents(oom, _count(folder / "memory.failcnt"))
    events = _counts(folder / "memory.events")
    return MemoryEvents(events.get("oom_kill"), events.get("max"))
