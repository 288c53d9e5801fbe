"""Where the manager's figures come from, as one object a test or another platform can replace.

Every reading the manager makes goes through these callables, so tests hand in fakes or
fixture trees instead of patching module globals, and a service on a platform with other files
supplies its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cgroup import CgroupMemory, read_cgroup_memory
from .holdings import Holdings, read_holdings
from .measure import HeapUsage, ProcessMemory, process_memory, rss_bytes
from .smaps import MappingUsage, read_breakdown


@dataclass(frozen=True)
class Readers:
    rss: Callable[[], int] = rss_bytes  # cheap: sampled on the request path
    process: Callable[[], ProcessMemory] = process_memory  # USS/PSS: walks every mapping
    cgroup: Callable[[], CgroupMemory | None] = read_cgroup_memory
    breakdown: Callable[[], list[MappingUsage]] = read_breakdown  # reads smaps: costly
    # The split of what the process holds, given the allocator's own account: walks pymalloc's
    # arenas and gc's lists, costly too.
    holdings: Callable[[Callable[[], HeapUsage | None]], Holdings] = read_holdings
