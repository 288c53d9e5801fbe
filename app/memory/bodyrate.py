"""When a request body being read must end: at its deadline, or once it arrives below a floor.

A deadline alone lets a client that sends a few bytes a second hold its request (and what the
request has reserved) for the whole of it; a floor on the data rate ends it after one grace
period. The rule is Kestrel's MinRequestBodyDataRate and the edge's (app/edge/rates.py): over
any window of ``grace_seconds`` once the first has passed, at least ``floor x grace`` bytes must
arrive. Here it is kept as the one moment the body must end by, recomputed on each arrival, so the
reader waits on a single timer: no sampling tick, and no cancelled ``receive()`` every second
(which not every ASGI server takes well).

Times are the caller's clock (the event loop's), passed in: the class itself is pure.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class BodyFloor:
    """The floor in bytes per second (0: none) and the window it is measured over."""

    min_bytes_per_second: float = 0.0
    grace_seconds: float = 5.0

    @property
    def window_bytes(self) -> float:
        """What must arrive in every window."""
        return self.min_bytes_per_second * self.grace_seconds


class BodyWatch:
    """One body's arrivals; ``deadline()`` is when it must end if nothing more arrives."""

    def __init__(self, floor: BodyFloor, timeout_seconds: float, start: float) -> None:
        self.floor = floor
        self.timeout_seconds = timeout_seconds
        self.start = start
        self.total = 0
        # (time, bytes so far) from the start; only those that can still be a window's start.
        self._samples: deque[tuple[float, int]] = deque([(start, 0)])

    def arrived(self, now: float, total: int) -> None:
        """The body has ``total`` bytes at ``now``."""
        self.total = total
        self._samples.append((now, total))
        threshold = total - self.floor.window_bytes
        # A sample is a window's start only while it is the first above the threshold; the
        # threshold only rises, so one overtaken never is again.
        while len(self._samples) > 1 and self._samples[1][1] <= threshold:
            self._samples.popleft()

    def paused(self, seconds: float) -> None:
        """The reader did not read for ``seconds`` (it waited for room in the budget): that time
        is the server's, not the client's, so every moment recorded moves on by it."""
        self.start += seconds
        self._samples = deque((t + seconds, n) for t, n in self._samples)

    def floor_deadline(self) -> float | None:
        """When the last ``grace_seconds`` will hold less than the floor's share, if nothing more
        arrives: the first moment recorded with more than ``total - window_bytes`` bytes, plus
        the grace. None without a floor."""
        if self.floor.min_bytes_per_second <= 0:
            return None
        threshold = self.total - self.floor.window_bytes
        first = next(t for t, n in self._samples if n > threshold)
        return max(first, self.start) + self.floor.grace_seconds

    def deadline(self) -> float:
        """The earlier of the body's deadline and the floor's."""
        whole = self.start + self.timeout_seconds
        floor = self.floor_deadline()
        return whole if floor is None else min(whole, floor)

    def below_floor(self, now: float) -> bool:
        """Whether the body, ended at ``now``, ended for its rate rather than its deadline."""
        floor = self.floor_deadline()
        return floor is not None and now >= floor and floor < self.start + self.timeout_seconds
