"""Admission control: requests reserve what they will cost from the in-flight budget first.

One pool of bytes per worker. A request that fits is granted at once; one that does not waits in
a short FIFO queue for at most ``max_wait_seconds``; past the queue's length, its wait, or while
memory pressure sheds new work, it is refused with a reason. Strict FIFO: a large request at the
head is not overtaken by small ones forever. Everything runs on the event loop thread, so the
counters need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Histogram

from .measure import fmt_mb
from .pressure import Pressure

log = logging.getLogger(__name__)

# Refusal reasons, as the metric's label and the 503's JSON reason.
BUDGET, QUEUE_TIMEOUT, PRESSURE = "budget", "queue_timeout", "pressure"
WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Refused(Exception):
    """The request cannot be admitted now; ``reason`` is one of the reasons above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Waiter:
    nbytes: int
    future: asyncio.Future[None] = field(repr=False)


class Reservation:
    """Bytes held from the pool; ``release`` is idempotent, so every exit path may call it."""

    def __init__(self, pool: Admission, nbytes: int) -> None:
        self._pool = pool
        self.nbytes = nbytes

    def resize(self, nbytes: int) -> None:
        """Shrink to what the request turned out to need (a chunked body that ended small)."""
        if 0 <= nbytes < self.nbytes:
            self._pool._give_back(self.nbytes - nbytes)
            self.nbytes = nbytes

    async def grow(self, nbytes: int) -> float:
        """Grow to ``nbytes`` (a body that has arrived further, or ended and is now worked on);
        the seconds it waited for room. Refused as a new reservation would be, but never shed
        for pressure: the request was admitted, and work admitted runs to its end."""
        extra = nbytes - self.nbytes
        if extra <= 0:
            return 0.0
        waited = await self._pool._take(extra, self.nbytes)
        self.nbytes = nbytes
        return waited

    def release(self) -> None:
        if self.nbytes:
            self._pool._give_back(self.nbytes)
            self.nbytes = 0


class Admission:
    def __init__(
        self,
        capacity_bytes: int,
        queue_limit: int = 4,
        max_wait_seconds: float = 2.0,
        pressure: Pressure | None = None,
        clock: Callable[[], float] = time.monotonic,
        namespace: str = "",
        label: str = "in-flight",
    ) -> None:
        self.capacity_bytes = capacity_bytes
        self.label = label  # which budget part this pool spends, for replies and log lines
        self.queue_limit = queue_limit
        self.max_wait_seconds = max_wait_seconds
        self.pressure = pressure
        self._clock = clock
        self.reserved_bytes = 0
        self._waiters: deque[_Waiter] = deque()
        self.admitted = 0
        self.rejections: Counter[str] = Counter()
        self.queue_wait = Histogram(
            "memory_admission_queue_wait_seconds",
            "Time admitted requests waited for their reservation.",
            buckets=WAIT_BUCKETS,
            namespace=namespace,  # the manager's metric namespace, as on every other metric
            registry=None,
        )
        self._refusing_since: int | None = None  # rejections count when refusals began

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def reserve(self, nbytes: int) -> Reservation:
        """A reservation of ``nbytes``, after a bounded wait; Refused when it cannot be had."""
        if self.pressure is not None and self.pressure.shedding():
            raise self._refuse(PRESSURE, "memory is over the high-water mark")
        waited = await self._take(nbytes)
        self._admitted(waited)
        return Reservation(self, nbytes)

    def too_large(self, nbytes: int) -> Refused:
        """The refusal of a request that needs more than the whole pool: it can never fit."""
        return self._refuse(
            BUDGET,
            f"needs {fmt_mb(nbytes)}, more than the {self.label} budget of "
            f"{fmt_mb(self.capacity_bytes)}",
        )

    async def _take(self, nbytes: int, held: int = 0) -> float:
        """Add ``nbytes`` to what is reserved, beside ``held`` already reserved by the same
        request, at once or after a bounded wait in the queue; the seconds waited."""
        if held + nbytes > self.capacity_bytes:
            raise self.too_large(held + nbytes)
        if not self._waiters and self.reserved_bytes + nbytes <= self.capacity_bytes:
            self.reserved_bytes += nbytes
            return 0.0
        if len(self._waiters) >= self.queue_limit:
            raise self._refuse(BUDGET, f"the {self.label} budget is full and so is its queue")
        return await self._wait(nbytes)

    async def _wait(self, nbytes: int) -> float:
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        started = self._clock()
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await waiter.future
        except TimeoutError:
            if not self._granted(waiter):
                self._forget(waiter)
                raise self._refuse(
                    QUEUE_TIMEOUT,
                    f"waited {self.max_wait_seconds:g}s for room in the {self.label} budget",
                ) from None
        except BaseException:  # cancelled: the client went away while it waited
            if self._granted(waiter):
                self._give_back(nbytes)
            else:
                self._forget(waiter)
            raise
        return self._clock() - started

    @staticmethod
    def _granted(waiter: _Waiter) -> bool:
        return waiter.future.done() and not waiter.future.cancelled()

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):  # the grant loop may have dropped it already
            self._waiters.remove(waiter)
        self._grant()  # the head may have been the one that did not fit

    def _give_back(self, nbytes: int) -> None:
        self.reserved_bytes -= nbytes
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # timed out or cancelled, not yet forgotten
                self._waiters.popleft()
                continue
            if self.reserved_bytes + head.nbytes > self.capacity_bytes:
                return
            self._waiters.popleft()
            self.reserved_bytes += head.nbytes
            head.future.set_result(None)

    def _admitted(self, waited: float) -> None:
        self.admitted += 1
        self.queue_wait.observe(waited)
        if self._refusing_since is not None and not self._waiters:
            refused = sum(self.rejections.values()) - self._refusing_since
            self._refusing_since = None
            log.info("[memory-admission] Admitting again (%s) after %d refusal(s)",
                     self.label, refused)

    def _refuse(self, reason: str, detail: str) -> Refused:
        if self._refusing_since is None and reason != PRESSURE:  # Pressure logs its own
            self._refusing_since = sum(self.rejections.values())
            log.warning(
                "[memory-admission] Refusing new work (%s, %s): %s reserved of %s, %d queued",
                reason,
                self.label,
                fmt_mb(self.reserved_bytes),
                fmt_mb(self.capacity_bytes),
                len(self._waiters),
            )
        self.rejections[reason] += 1
        return Refused(reason, detail)
