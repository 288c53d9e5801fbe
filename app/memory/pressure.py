"""Memory pressure: whether measured usage is above the high-water mark, so new work is shed.

The budget is a plan; this is the check against what the kernel actually counts. Usage is read
at most every ``sample_seconds`` (a few small file reads), on the caller's thread, and the state
has hysteresis: shedding starts above the high-water mark and stops only once usage is a margin
below it, so a reading that hovers at the mark does not flap. Each change of state is one log
line, never one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .measure import fmt_mb

log = logging.getLogger(__name__)
# Where shedding stops, as a share of the mark where it starts (the hysteresis).
LOW_WATER_SHARE = 0.95


class Pressure:
    def __init__(
        self,
        high_water_bytes: int,
        read_usage: Callable[[], int | None],
        source: str,
        low_water_bytes: int | None = None,
        on_start: Callable[[int], None] | None = None,
        sample_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.high_water_bytes = high_water_bytes
        if low_water_bytes is None:
            low_water_bytes = int(high_water_bytes * LOW_WATER_SHARE)
        self.low_water_bytes = low_water_bytes
        self.source = source  # what usage is: "cgroup working set" or "RSS"
        self._read = read_usage
        self._on_start = on_start
        self._every = sample_seconds
        self._clock = clock
        self._next = 0.0
        self.usage_bytes: int | None = None
        self.active = False
        self.episodes = 0
        self.read_failures = 0

    def shedding(self) -> bool:
        """True while new work should be refused; samples usage when a reading is due."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            self._sample()
        return self.active

    def _sample(self) -> None:
        try:
            usage = self._read()
        except Exception:  # an unreadable figure must not refuse or admit anything by itself
            self.read_failures += 1
            return
        if usage is None:
            return
        self.usage_bytes = usage
        if not self.active and usage > self.high_water_bytes:
            self.active = True
            self.episodes += 1
            log.warning(
                "[memory-admission] Shedding new work: %s %s is over the high-water mark %s",
                self.source,
                fmt_mb(usage),
                fmt_mb(self.high_water_bytes),
            )
            if self._on_start is not None:
                self._on_start(usage)
        elif self.active and usage < self.low_water_bytes:
            self.active = False
            log.info(
                "[memory-admission] Stopped shedding: %s %s is under %s",
                self.source,
                fmt_mb(usage),
                fmt_mb(self.low_water_bytes),
            )
