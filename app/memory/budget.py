"""The memory budget: a worker's share of the limit, split into the parts that must fit in it.

A limit is only held if every consumer of memory has a bound and the bounds add up: the
process's own start (code, modules, the allocator's first arenas), the long-lived data (a cache),
the requests in flight (bodies and the work done on them) and headroom for what no bound covers
(fragmentation, thread stacks, the allocator's slack). Admission control spends the in-flight
part; large replies reserve their window from the outbound part (outbound.py); the headroom is
also the margin the pressure check keeps below the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from .measure import fmt_mb

DEFAULT_HEADROOM_SHARE = 0.10  # of the limit, when no headroom is given
DEFAULT_OUTBOUND_SHARE = 0.06  # of the limit, when no outbound part is given
MIN_HEADROOM_BYTES = 16 * 1024 * 1024


class BudgetError(ValueError):
    """The parts do not fit the limit; the message gives every figure, for one log line."""


@dataclass(frozen=True)
class MemoryBudget:
    """One worker's budget, in bytes. ``limit`` >= ``base + cache + inflight + outbound +
    headroom``."""

    limit_bytes: int
    base_bytes: int  # the process's own RSS at start, measured
    cache_bytes: int
    inflight_bytes: int  # request bodies and the submissions running on them
    headroom_bytes: int
    outbound_bytes: int = 0  # reply bytes queued for clients: the windows of large replies

    @property
    def high_water_bytes(self) -> int:
        """Usage above this eats into the headroom: new work is shed until it falls."""
        return self.limit_bytes - self.headroom_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "limit_bytes": self.limit_bytes,
            "base_bytes": self.base_bytes,
            "cache_bytes": self.cache_bytes,
            "inflight_bytes": self.inflight_bytes,
            "headroom_bytes": self.headroom_bytes,
            "outbound_bytes": self.outbound_bytes,
            "high_water_bytes": self.high_water_bytes,
        }

    def log_line(self) -> str:
        return (
            f"[memory] budget {fmt_mb(self.limit_bytes)}: start {fmt_mb(self.base_bytes)} + "
            f"cache {fmt_mb(self.cache_bytes)} + in-flight {fmt_mb(self.inflight_bytes)} + "
            f"outbound {fmt_mb(self.outbound_bytes)} + headroom {fmt_mb(self.headroom_bytes)}"
        )


def split_budget(
    limit_bytes: int,
    base_bytes: int,
    cache_bytes: int,
    headroom_bytes: int | None = None,
    inflight_bytes: int | None = None,
    outbound_bytes: int | None = None,
) -> MemoryBudget:
    """The split, with unset parts derived so that everything fits; BudgetError when the given
    parts leave nothing (or less than nothing) for the rest."""
    if headroom_bytes is None:
        headroom_bytes = max(int(limit_bytes * DEFAULT_HEADROOM_SHARE), MIN_HEADROOM_BYTES)
    if outbound_bytes is None:
        outbound_bytes = int(limit_bytes * DEFAULT_OUTBOUND_SHARE)
    fixed = base_bytes + cache_bytes + headroom_bytes + outbound_bytes
    if inflight_bytes is None:
        inflight_bytes = limit_bytes - fixed
    total = fixed + inflight_bytes
    if inflight_bytes <= 0 or total > limit_bytes:
        raise BudgetError(
            f"start {fmt_mb(base_bytes)} + cache {fmt_mb(cache_bytes)} + in-flight "
            f"{fmt_mb(max(inflight_bytes, 0))} + outbound {fmt_mb(outbound_bytes)} + headroom "
            f"{fmt_mb(headroom_bytes)} = "
            f"{fmt_mb(total)} does not fit the limit of {fmt_mb(limit_bytes)}"
        )
    return MemoryBudget(
        limit_bytes, base_bytes, cache_bytes, inflight_bytes, headroom_bytes, outbound_bytes
    )
