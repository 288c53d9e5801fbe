"""Minimum data rates: a client that sends its body, or reads its reply, slower than a floor is cut.

A deadline alone cannot tell a large body on a slow phone from a client that sends a byte every
few seconds to hold a connection (and, for a reply, the bytes queued for it) for as long as it
likes. Kestrel (MinRequestBodyDataRate, MinResponseDataRate: 240 bytes/s after a 5 s grace),
nginx (client_body_timeout, send_timeout) and Apache (mod_reqtimeout MinRate) bound both; this
is the same rule for uvicorn's connections.

The rate is measured only while the server waits on the client (a body the app is reading, or
reply bytes the socket has not taken), over a sliding window as long as the grace period: an
average since the start would count the first burst into the kernel's buffers and let a client
that then stalls go on for minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RateFloor:
    """The floor, in bytes per second (0 turns the check off), and the grace period."""

    min_bytes_per_second: float
    grace_seconds: float

    @property
    def enabled(self) -> bool:
        return self.min_bytes_per_second > 0


@dataclass(slots=True)
class DataRate:
    """Bytes moved in one direction of one connection, sampled while the server is waiting.

    Two per open connection, most of them idle: slotted, and the samples kept only while the
    server waits. tracemalloc counted an empty deque and an instance dict at about 1.5 KB a rate;
    a thousand idle connections grew the cgroup by about 0.5 KB less each (lab/readers)."""

    floor: RateFloor
    _samples: deque[tuple[float, int]] | None = None

    def observe(self, waiting: bool, total_bytes: int, now: float) -> None:
        """Record a sample; a moment when the server is not waiting starts the window over."""
        if not waiting:
            self._samples = None
            return
        if self._samples is None:
            self._samples = deque()
        self._samples.append((now, total_bytes))
        # Keep one sample at or before the window's start: the baseline the window is read from.
        horizon = now - self.floor.grace_seconds
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    def waited(self) -> float:
        """Seconds of waiting the samples cover; 0 when not waiting."""
        return self._samples[-1][0] - self._samples[0][0] if self._samples else 0.0

    def rate(self) -> float | None:
        """Bytes per second over the window; None before two samples of waiting."""
        waited = self.waited()
        if waited <= 0 or not self._samples:
            return None
        return (self._samples[-1][1] - self._samples[0][1]) / waited

    def too_slow(self) -> bool:
        """Waited a whole grace period, and moved less than the floor over it."""
        if not self.floor.enabled or self.waited() < self.floor.grace_seconds:
            return False
        rate = self.rate()
        return rate is not None and rate < self.floor.min_bytes_per_second

    def below_floor(self) -> float | None:
        """The rate, when the connection is below the floor so far (grace or not), else None:
        what the connection cap ranks the connections it may close by."""
        rate = self.rate()
        if not self.floor.enabled or rate is None or rate >= self.floor.min_bytes_per_second:
            return None
        return rate
