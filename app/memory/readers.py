"""Where the manager's figures come from, as one object a test or another platform can replace.

Every reading the manager makes goes through these four callables, so tests hand in fakes or
fixture trees instead of patching module globals, and a service on a platform with other files
supplies its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cgroup import CgroupMemory, read_cgroup_memory
from .measure import ProcessMemory, process_memory, rss_bytes
from .smaps import MappingUsage, read_breakdown


@dataclass(frozen=True)
class Readers:
    rss: Callable[[], int] = rss_bytes  # cheap: sampled on the request path
    process: Callable[[], ProcessMemory] = process_memory  # USS/PSS: walks every mapping
    cgroup: Callable[[], CgroupMemory | None] = read_cgroup_memory
    breakdown: Callable[[], list[MappingUsage]] = read_breakdown  # reads smaps: costly
