"""The container's memory limit and usage, read from the cgroup files (v2 and v1).

Platforms rarely document how they meter memory, so the manager reads what the kernel enforces.
Paths are arguments so tests can point them at fixture trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "unlimited" as PAGE_COUNTER_MAX pages (9223372036854771712 on 4 KiB pages);
# anything this large is no limit at all.
UNLIMITED_FROM = 1 << 60


@dataclass(frozen=True)
class CgroupMemory:
    """One reading. Bytes; ``None`` where the kernel says unlimited or a file was unreadable."""

    version: int
    path: str
    limit_bytes: int | None
    usage_bytes: int | None
    # usage minus inactive page cache: the figure `docker stats` and the kubelet report, and the
    # one closest to what the OOM killer will not reclaim first.
    working_set_bytes: int | None
    # The kernel's high-water mark of usage (v1 memory.max_usage_in_bytes, v2 memory.peak):
    # since the cgroup was made or last reset. A peak between two samples shows here, not there.
    peak_bytes: int | None = None


def unlimited_note(reading: CgroupMemory) -> str:
    """What the status says instead of a cgroup without a memory limit: outside a container with
    a limit (a terminal, a host's service), the cgroup found is an enclosing group's, and its
    usage is everything in it, not this service."""
    return (
        f"no memory limit of its own (cgroup v{reading.version} {reading.path}): its usage is the "
        "enclosing group's, not this service's, so it is not reported"
    )


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED_FROM else value


def _read_stat(path: Path) -> dict[str, int]:
    stats: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return stats
    for line in lines:
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def _own_paths(proc_self_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory-controller path) from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _min_limit(*limits: int | None) -> int | None:
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(usage - (inactive_file or 0), 0)


def _is_v1(folder: Path) -> bool:
    return (folder / "memory.limit_in_bytes").exists()


def _is_v2(folder: Path) -> bool:
    return (folder / "memory.current").exists() or (folder / "memory.max").exists()


def _read_v2(root: Path, folder: Path, path: str) -> CgroupMemory:
    # A limit set on a parent applies too: walk up to the mount and keep the smallest.
    limit: int | None = None
    current = folder
    while True:
        limit = _min_limit(limit, _read_int(current / "memory.max"))
        if current == root or root not in current.parents:
            break
        current = current.parent
    usage = _read_int(folder / "memory.current")
    stat = _read_stat(folder / "memory.stat")
    working_set = _working_set(usage, stat.get("inactive_file"))
    return CgroupMemory(2, path, limit, usage, working_set, _read_int(folder / "memory.peak"))


def _read_v1(folder: Path, path: str) -> CgroupMemory:
    stat = _read_stat(folder / "memory.stat")
    hierarchical = stat.get("hierarchical_memory_limit")
    if hierarchical is not None and hierarchical >= UNLIMITED_FROM:
        hierarchical = None
    limit = _min_limit(_read_int(folder / "memory.limit_in_bytes"), hierarchical)
    usage = _read_int(folder / "memory.usage_in_bytes")
    inactive = stat.get("total_inactive_file", stat.get("inactive_file"))
    peak = _read_int(folder / "memory.max_usage_in_bytes")
    return CgroupMemory(1, path, limit, usage, _working_set(usage, inactive), peak)


def locate_cgroup(
    root: Path = CGROUP_ROOT, cgroup_file: Path = PROC_SELF_CGROUP
) -> tuple[Path, str] | None:
    """(folder, path) of the memory cgroup a /proc/<pid>/cgroup file names, v1 before v2.

    Inside a container's cgroup namespace the mount is the cgroup itself, so a named path not
    under the mount means the mount."""
    v2_path, v1_path = _own_paths(cgroup_file)
    base = root / "memory"
    if v1_path is not None and base.is_dir():
        folder = base / v1_path.lstrip("/")
        if not folder.is_dir():
            folder = base
        if _is_v1(folder):
            return folder, v1_path
    if v2_path is not None:
        folder = root / v2_path.lstrip("/")
        if not folder.is_dir():
            folder = root
        if _is_v2(folder):
            return folder, v2_path
    return None


def read_cgroup_at(
    folder: Path, root: Path = CGROUP_ROOT, path: str | None = None
) -> CgroupMemory | None:
    """The reading of a memory cgroup at a known folder, v1 or v2 by its files: a cgroup made
    for a run, or a container's seen from the host. ``path`` labels it (default: the folder
    relative to its mount)."""
    if _is_v1(folder):
        base = root / "memory"
        label = path or "/" + str(folder.relative_to(base)).removeprefix(".")
        return _read_v1(folder, label)
    if _is_v2(folder):
        label = path or "/" + str(folder.relative_to(root)).removeprefix(".")
        return _read_v2(root, folder, label)
    return None


def read_cgroup_memory(
    root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> CgroupMemory | None:
    """The memory cgroup this process is in, or ``None`` outside Linux or without one."""
    found = locate_cgroup(root, proc_self_cgroup)
    if found is None:
        return None
    folder, path = found
    return read_cgroup_at(folder, root, path)
