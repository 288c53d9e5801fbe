"""The background cleanup loop: release memory on a clock, when traffic stops, and when the
request path reports RSS over the threshold.

Four triggers, one loop, so releases stay serial and their rate bounded:
- interval: every ``interval_seconds`` (the seed guide's loop);
- idle: ``idle_release_seconds`` after the last request of a burst, so a spike is returned in
  seconds rather than up to a whole interval later;
- expiry: when everything a hook holds has expired (a cache's newest entry is past its TTL), so
  data kept only for a while is dropped and returned then, not up to an interval later; it
  cannot fire while traffic keeps adding entries, and fires once per such moment;
- threshold: the request path saw RSS over the threshold; honoured at most once per interval,
  because releasing under load frees little and contends with the requests;
- pressure: usage crossed the admission high-water mark; honoured at once (at most every
  PRESSURE_MIN_SECONDS), because there freeing anything beats waiting.
A run releases only when RSS is over the threshold and has grown by ``release_min_bytes`` since
the last release: re-trimming an idle heap frees nothing and still pauses for gc.collect().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .measure import MB, fmt_mb, rss_bytes
from .release import Releaser, ReleaseResult
from .traffic import Activity

log = logging.getLogger(__name__)

# e.g. drop expired cache entries or delete expired rows; returns how many. Hooks run in a worker
# thread, so one that waits on a database does not hold the event loop.
CleanupHook = Callable[[], int]
# When everything a hook's data holds has expired, on time.monotonic; None while it holds nothing.
ExpirySource = Callable[[], float | None]
PRESSURE_MIN_SECONDS = 2.0  # releases on pressure at most this often


# The variables CleanupConfig.from_env reads: the same names this repository's service reads, so
# the verifier's presets (MEMORY_CLEANUP_INTERVAL) and a `--set MEMORY_CLEANUP=0` reach a lifted
# service too.
ENABLED_VARIABLE = "MEMORY_CLEANUP"
INTERVAL_VARIABLE = "MEMORY_CLEANUP_INTERVAL"
THRESHOLD_VARIABLE = "MEMORY_CLEANUP_THRESHOLD_MB"
IDLE_VARIABLE = "MEMORY_IDLE_RELEASE_SECONDS"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class CleanupConfig:
    enabled: bool = True
    interval_seconds: float = 60.0
    threshold_bytes: int = 100 * MB
    idle_release_seconds: float = 5.0  # 0 turns the idle trigger off
    release_min_bytes: int = 4 * MB

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **defaults: Any
    ) -> CleanupConfig:
        """The config from the environment, over ``defaults`` (keyword arguments of this class):
        MEMORY_CLEANUP (0 turns the loop off, to measure what it adds on top of the allocator),
        MEMORY_CLEANUP_INTERVAL (seconds), MEMORY_CLEANUP_THRESHOLD_MB and
        MEMORY_IDLE_RELEASE_SECONDS (0 turns the idle trigger off). A value that is not one
        raises ValueError naming the variable: bad configuration stops startup, it is not
        quietly replaced."""
        env = os.environ if environ is None else environ
        base = cls(**defaults)
        return cls(
            enabled=_flag(env, ENABLED_VARIABLE, base.enabled),
            interval_seconds=_number(env, INTERVAL_VARIABLE, base.interval_seconds, minimum=0.0),
            threshold_bytes=int(
                _number(env, THRESHOLD_VARIABLE, base.threshold_bytes / MB, 0.0, strict=False) * MB
            ),
            idle_release_seconds=_number(
                env, IDLE_VARIABLE, base.idle_release_seconds, 0.0, strict=False
            ),
            release_min_bytes=base.release_min_bytes,
        )


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ValueError(f"{name}={env[name]!r}: expected 1 or 0 (true/false, yes/no, on/off)")


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float, strict: bool = True
) -> float:
    """The variable as a finite number over ``minimum`` (or at least it, not ``strict``)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name}={env[name]!r}: expected a number {bound}")
    return value


class CleanupLoop:
    def __init__(
        self,
        config: CleanupConfig,
        releaser: Releaser,
        activity: Activity,
        hooks: Sequence[CleanupHook] = (),
        read_rss: Callable[[], int] = rss_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.releaser = releaser
        self.activity = activity
        self.hooks = list(hooks)
        self.expiry_sources: list[ExpirySource] = []
        self._expiry_handled = float("-inf")  # a moment already run for is not run for again
        self._read_rss = read_rss
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._requests_seen = activity.requests
        self._pressure_pending = False
        self._last_run = clock()
        self.runs = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self, rss: int) -> None:
        """Called from the request path (on the event loop thread) when RSS is over threshold."""
        if self._wake is not None:
            self._wake.set()

    def wake_for_pressure(self, usage: int) -> None:
        """Called when usage crosses the high-water mark: release now, not at the next interval
        (at most once per PRESSURE_MIN_SECONDS), since refusing work alone frees nothing."""
        self._pressure_pending = True
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        if not self.config.enabled:
            log.info("[memory-cleanup] Disabled: no background releases")
            return
        # Events belong to the loop that runs this task; a lifespan run again (a second
        # TestClient, a reloaded server) gets fresh ones.
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="memory-cleanup")
        idle = self.config.idle_release_seconds
        log.info(
            "[memory-cleanup] Background cleanup task running every %gs (threshold %s, %s)",
            self.config.interval_seconds,
            fmt_mb(self.config.threshold_bytes),
            f"idle release after {idle:g}s" if idle else "idle release off",
        )

    async def stop(self, timeout: float = 1.0) -> None:
        """Stop within ``timeout``; a release already in its worker thread finishes on its own."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.info("[memory-cleanup] Stopped (cancelled a run in progress)")
        else:
            log.info("[memory-cleanup] Stopped")
        self._task = None

    async def _run(self) -> None:
        assert self._stop is not None
        next_interval = self._clock() + self.config.interval_seconds
        while not self._stop.is_set():
            trigger = await self._next_trigger(next_interval)
            if trigger is None:
                break
            if trigger == "interval":
                next_interval = self._clock() + self.config.interval_seconds
            try:
                await self.run_once(trigger)
            except Exception:
                self.failures += 1
                log.exception("[memory-cleanup] Run failed (%s); the loop goes on", trigger)

    async def _next_trigger(self, next_interval: float) -> str | None:
        """Sleep until something is due; None once stopping."""
        assert self._stop is not None and self._wake is not None
        while True:
            now = self._clock()
            if now >= next_interval:
                return "interval"
            if self._idle_due():
                return "idle"
            if self._pressure_pending and now - self._last_run >= PRESSURE_MIN_SECONDS:
                self._pressure_pending = False
                return "pressure"
            expiry = self._all_expired_at()
            if expiry is not None and expiry <= self._expiry_handled:
                expiry = None  # its data outlived the purge (a hook that keeps it): not a loop
            if expiry is not None and expiry <= now:
                self._expiry_handled = expiry
                return "expiry"
            deadline = next_interval if expiry is None else min(next_interval, expiry)
            if self._pressure_pending:
                deadline = min(deadline, self._last_run + PRESSURE_MIN_SECONDS)
            idle = self.config.idle_release_seconds
            if idle:
                # Requests do not wake the loop, so while the idle trigger is on it looks at
                # least every `idle` seconds: a burst is returned within twice that.
                pending_for = idle - self.activity.idle_for()
                if self.activity.requests == self._requests_seen:
                    pending_for = idle
                deadline = min(deadline, now + max(pending_for, 0.05))
            waiters = [
                asyncio.ensure_future(self._stop.wait()),
                asyncio.ensure_future(self._wake.wait()),
            ]
            _, pending = await asyncio.wait(
                waiters, timeout=max(deadline - now, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            if self._stop.is_set():
                return None
            if self._wake.is_set():
                self._wake.clear()
                if self._pressure_pending:
                    continue  # judged at the top, with its own spacing
                if self._clock() - self._last_run >= self.config.interval_seconds:
                    return "threshold"

    def _all_expired_at(self) -> float | None:
        """The earliest moment at which some hook's data has all expired; a source that fails is
        counted and left out, and the interval still purges what it holds."""
        moments = []
        for source in self.expiry_sources:
            try:
                moment = source()
            except Exception:
                self.failures += 1
                log.exception("[memory-cleanup] Expiry source failed; the interval still purges")
                continue
            if moment is not None:
                moments.append(moment)
        return min(moments, default=None)

    def _idle_due(self) -> bool:
        idle = self.config.idle_release_seconds
        return (
            bool(idle)
            and self.activity.requests != self._requests_seen
            and (self.activity.idle_for() >= idle)
        )

    def _worth_releasing(self, rss: int, cleaned: int) -> str | None:
        """Why not to release now, or None to go ahead. Entries the hooks just dropped are
        freed memory whatever RSS did since the last release, so they always justify one."""
        if rss <= self.config.threshold_bytes:
            return f"under threshold {fmt_mb(self.config.threshold_bytes)}"
        last = self.releaser.last
        if cleaned:
            return None
        if last is not None and rss < last.rss_after_bytes + self.config.release_min_bytes:
            grown = rss - last.rss_after_bytes
            return f"grew {fmt_mb(max(grown, 0))} since the last release"
        return None

    def _run_hooks(self) -> int:
        return sum(hook() for hook in self.hooks)

    async def run_once(self, trigger: str) -> ReleaseResult | None:
        """One cleanup: hooks (expired cache entries), then a release if it is worth one."""
        self.runs += 1
        self._last_run = self._clock()
        self._requests_seen = self.activity.requests
        # Hooks run on every run: expired entries must go even when no release is worth it.
        cleaned = await asyncio.to_thread(self._run_hooks) if self.hooks else 0
        rss = self._read_rss()
        skip = self._worth_releasing(rss, cleaned)
        if skip is not None:
            log.info(
                "[memory-cleanup] Skipped %s run (RSS: %s, %s; cache entries cleaned: %d)",
                trigger,
                fmt_mb(rss),
                skip,
                cleaned,
            )
            return None
        log.info("[memory-cleanup] Running %s cleanup (RSS: %s)", trigger, fmt_mb(rss))
        result = await self.releaser.release_async(trigger, wait=False)
        if result is None:
            log.info("[memory-cleanup] Another release is running; this one is skipped")
            return None
        log.info(
            "[memory-cleanup] Completed - Cache entries cleaned: %d, Memory freed: %s",
            cleaned,
            fmt_mb(max(result.freed_bytes, 0)),
        )
        return result
