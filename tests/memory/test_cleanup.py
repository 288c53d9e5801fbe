"""The cleanup loop on a real asyncio loop: its four triggers, skips, hooks, failures, stop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from app.memory.allocator import Allocator
from app.memory.cleanup import CleanupConfig, CleanupHook, CleanupLoop
from app.memory.release import Releaser
from app.memory.traffic import Activity
from tests.memory.conftest import BlockingTrim

MB = 1024 * 1024
LOGGER = "app.memory.cleanup"


class Rss:
    """A settable RSS reading."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


class CountingClock:
    """time.monotonic, counting how often the loop looks at the time: each look is a check."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return time.monotonic()


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def make_loop(
    config: CleanupConfig,
    rss: Callable[[], int] | None = None,
    trim: Callable[[], bool] = lambda: True,
    hooks: Sequence[CleanupHook] = (),
    clock: Callable[[], float] = time.monotonic,
    releaser_rss: Callable[[], int] | None = None,
) -> CleanupLoop:
    rss = rss or Rss(500 * MB)
    releaser = Releaser(Allocator("glibc", None, "malloc_trim", trim), read_rss=releaser_rss or rss)
    return CleanupLoop(config, releaser, Activity(), hooks, read_rss=rss, clock=clock)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def config(**overrides: object) -> CleanupConfig:
    values: dict[str, object] = {
        "interval_seconds": 3600.0,
        "threshold_bytes": 0,
        "idle_release_seconds": 0.0,
        "release_min_bytes": 0,
    }
    values.update(overrides)
    return CleanupConfig(**values)  # type: ignore[arg-type]


def test_interval_trigger_runs_repeatedly() -> None:
    async def scenario() -> None:
        loop = make_loop(config(interval_seconds=0.05))
        loop.start()
        assert loop.running
        await until(lambda: loop.releaser.counts[("interval", "ok")] >= 3, "three interval runs")
        await loop.stop()
        assert not loop.running
        assert loop.failures == 0
        assert set(loop.releaser.counts) == {("interval", "ok")}

    run(scenario)


def test_idle_release_after_traffic_stops_not_while_in_flight() -> None:
    async def scenario() -> None:
        clock = CountingClock()
        loop = make_loop(config(idle_release_seconds=0.05), clock=clock)
        loop.start()
        await until(lambda: clock.calls >= 2, "the loop to start waiting")
        loop.activity.begin()
        loop.wake(500 * MB)  # what the guard does when a request sees RSS over the threshold
        looked = clock.calls
        # The loop re-checks every idle period while the request is in flight; let it look
        # several times, then make sure it never released.
        await until(lambda: clock.calls >= looked + 4, "several checks while in flight")
        assert not loop.releaser.history
        loop.activity.end()
        await until(lambda: loop.releaser.counts[("idle", "ok")] == 1, "the idle release")
        # No new traffic: no second idle release; new traffic arms it again.
        loop.activity.begin()
        loop.activity.end()
        loop.wake(500 * MB)
        await until(lambda: loop.releaser.counts[("idle", "ok")] == 2, "a second idle release")
        await loop.stop()
        assert set(loop.releaser.counts) == {("idle", "ok")}

    run(scenario)


def test_idle_release_after_a_burst_nothing_else_woke() -> None:
    async def scenario() -> None:
        clock = CountingClock()
        loop = make_loop(config(idle_release_seconds=0.05), clock=clock)
        loop.start()
        # The loop computes its deadline with no traffic seen yet.
        await until(lambda: clock.calls >= 2, "the loop to start waiting")
        loop.activity.begin()
        loop.activity.end()
        try:
            await until(lambda: loop.releaser.counts[("idle", "ok")] == 1, "the idle release", 1.5)
        finally:
            await loop.stop()

    run(scenario)


class ExpiringData:
    """What a cache looks like to the loop: entries that all expire at one moment."""

    def __init__(self, ttl: float) -> None:
        self.expires = time.monotonic() + ttl
        self.held = True
        self.purges = 0

    def all_expired_at(self) -> float | None:
        return self.expires if self.held else None

    def purge(self) -> int:
        self.purges += 1
        if self.held and time.monotonic() >= self.expires:
            self.held = False
            return 7
        return 0


def test_expiry_trigger_purges_and_releases_once_everything_has_expired() -> None:
    async def scenario() -> None:
        data = ExpiringData(ttl=0.1)
        loop = make_loop(config(), hooks=[data.purge])
        loop.expiry_sources.append(data.all_expired_at)
        loop.start()
        await until(lambda: loop.releaser.counts[("expiry", "ok")] == 1, "the expiry release")
        assert not data.held
        runs = loop.runs
        await asyncio.sleep(0.1)  # nothing held any more: nothing is due until the interval
        await loop.stop()
        assert loop.runs == runs == 1
        assert set(loop.releaser.counts) == {("expiry", "ok")}

    run(scenario)


def test_expiry_that_a_purge_does_not_clear_is_run_for_once() -> None:
    async def scenario() -> None:
        moment = time.monotonic() + 0.05
        loop = make_loop(config(), hooks=[lambda: 0])
        loop.expiry_sources.append(lambda: moment)  # a source whose data outlives the purge
        loop.start()
        await until(lambda: loop.runs == 1, "the expiry run")
        await asyncio.sleep(0.1)  # a loop that re-ran for the same moment would spin here
        await loop.stop()
        assert loop.runs == 1

    run(scenario)


def test_a_failing_expiry_source_is_counted_and_the_interval_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> float | None:
        raise OSError("cannot read")

    async def scenario() -> None:
        # The idle trigger makes the loop look every 0.05 s while it waits for the interval.
        loop = make_loop(config(interval_seconds=0.3, idle_release_seconds=0.05))
        loop.expiry_sources.append(broken)
        loop.start()
        await until(lambda: loop.failures >= 2, "the source to fail on two looks")
        await until(lambda: loop.releaser.counts[("interval", "ok")] >= 1, "an interval run")
        await loop.stop()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(scenario)
    assert "Expiry source failed" in caplog.text


def test_threshold_wake_is_honoured_at_most_once_per_interval() -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        loop = make_loop(config(interval_seconds=1000.0), clock=clock)  # last run: t=0
        clock.now = 500.0
        loop.start()  # next interval at t=1500

        async def wake_processed() -> None:
            seen = clock.calls
            loop.wake(500 * MB)
            await until(lambda: clock.calls >= seen + 2, "the wake to be looked at")

        await until(lambda: clock.calls >= 2, "the loop to start waiting")
        await wake_processed()  # 500 s after the last run: too soon
        assert loop.runs == 0
        clock.now = 1200.0
        loop.wake(500 * MB)
        await until(lambda: loop.releaser.counts[("threshold", "ok")] == 1, "threshold run")
        await wake_processed()  # right after that run: too soon again
        await wake_processed()
        assert loop.runs == 1
        clock.now = 2200.0  # one interval after the threshold run
        loop.wake(500 * MB)
        await until(lambda: loop.releaser.counts[("threshold", "ok")] == 2, "second threshold")
        await loop.stop()

    run(scenario)


def test_skip_under_threshold(caplog: pytest.LogCaptureFixture) -> None:
    trims: list[int] = []
    rss = Rss(100 * MB)
    loop = make_loop(config(threshold_bytes=100 * MB), rss=rss, trim=lambda: bool(trims.append(1)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert asyncio.run(loop.run_once("interval")) is None
    assert trims == []
    assert loop.runs == 1
    assert "Skipped interval run (RSS: 100.0MB, under threshold 100.0MB;" in caplog.text
    rss.value = 100 * MB + 1
    assert asyncio.run(loop.run_once("interval")) is not None
    assert trims == [1]


def test_skip_until_rss_grew_by_release_min(caplog: pytest.LogCaptureFixture) -> None:
    rss = Rss(50 * MB)
    loop = make_loop(config(threshold_bytes=10 * MB, release_min_bytes=4 * MB), rss=rss)
    first = asyncio.run(loop.run_once("interval"))
    assert first is not None and first.rss_after_bytes == 50 * MB
    rss.value = 50 * MB + 4 * MB - 1
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert asyncio.run(loop.run_once("idle")) is None
    assert "Skipped idle run" in caplog.text and "grew 4.0MB since the last release" in caplog.text
    rss.value = 54 * MB
    assert asyncio.run(loop.run_once("idle")) is not None
    assert len(loop.releaser.history) == 2


def test_dropped_cache_entries_justify_a_release_without_growth() -> None:
    rss = Rss(50 * MB)
    dropped = [0]
    loop = make_loop(
        config(threshold_bytes=10 * MB, release_min_bytes=4 * MB),
        rss=rss,
        hooks=[lambda: dropped[0]],
    )
    assert asyncio.run(loop.run_once("interval")) is not None
    assert asyncio.run(loop.run_once("interval")) is None  # no growth, nothing dropped
    dropped[0] = 3  # expired results just went: their memory is free whatever RSS says
    assert asyncio.run(loop.run_once("interval")) is not None
    assert len(loop.releaser.history) == 2


def test_hooks_run_before_the_release(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    def purge() -> int:
        events.append("hook")
        return 3

    def trim() -> bool:
        events.append("release")
        return True

    loop = make_loop(config(), trim=trim, hooks=[purge, lambda: 2])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        done = asyncio.run(loop.run_once("interval"))
    assert done is not None
    assert events == ["hook", "release"]
    assert "Completed - Cache entries cleaned: 5, Memory freed:" in caplog.text


def test_hooks_run_off_the_event_loop() -> None:
    """A hook may wait on a database: the loop's thread goes on serving meanwhile."""
    threads: list[threading.Thread] = []
    loop = make_loop(config(), hooks=[lambda: threads.append(threading.current_thread()) or 0])

    async def run() -> bool:
        await loop.run_once("interval")
        return threads[0] is not threading.current_thread()

    assert asyncio.run(run())


def test_hooks_run_even_when_the_release_is_skipped() -> None:
    purged: list[int] = []
    loop = make_loop(
        config(threshold_bytes=200 * MB), rss=Rss(100 * MB), hooks=[lambda: purged.append(1) or 1]
    )
    assert asyncio.run(loop.run_once("interval")) is None
    assert purged == [1]


def test_a_failing_run_is_logged_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads = {"n": 0}

    def rss() -> int:
        reads["n"] += 1
        if reads["n"] == 1:
            raise OSError("statm unreadable")
        return 500 * MB

    async def scenario() -> None:
        loop = make_loop(config(interval_seconds=0.02), rss=rss, releaser_rss=Rss(500 * MB))
        loop.start()
        await until(lambda: loop.releaser.counts[("interval", "ok")] >= 1, "a run after it")
        await loop.stop()
        assert loop.failures == 1
        assert loop.runs >= 2

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(scenario)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert failures[0].getMessage() == "[memory-cleanup] Run failed (interval); the loop goes on"
    assert failures[0].exc_info is not None


def test_stop_mid_wait_returns_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = CountingClock()
        loop = make_loop(config(idle_release_seconds=5.0), clock=clock)
        loop.start()
        await until(lambda: clock.calls >= 2, "the loop to wait")
        started = time.monotonic()
        await loop.stop()
        assert time.monotonic() - started < 1.0
        assert not loop.running

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(scenario)
    assert "[memory-cleanup] Stopped" in [r.getMessage() for r in caplog.records]


def test_stop_mid_release_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    trim = BlockingTrim()

    async def scenario() -> None:
        loop = make_loop(config(interval_seconds=0.01), trim=trim)
        loop.start()
        await until(trim.entered.is_set, "a release to start")
        started = time.monotonic()
        await loop.stop(timeout=0.1)
        assert time.monotonic() - started < 1.0
        assert not loop.running
        trim.go.set()  # the worker thread finishes on its own

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(scenario)
    assert "[memory-cleanup] Stopped (cancelled a run in progress)" in caplog.text


def test_disabled_loop_never_starts(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = make_loop(config(enabled=False, interval_seconds=0.01))
        before = len(asyncio.all_tasks())
        loop.start()
        assert not loop.running
        assert len(asyncio.all_tasks()) == before
        await loop.stop()
        assert loop.runs == 0

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(scenario)
    assert "[memory-cleanup] Disabled: no background releases" in caplog.text


def test_start_logs_its_settings(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = make_loop(config(interval_seconds=60, threshold_bytes=100 * MB))
        loop.start()
        await loop.stop()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(scenario)
    assert (
        "[memory-cleanup] Background cleanup task running every 60s "
        "(threshold 100.0MB, idle release off)"
    ) in caplog.text


def test_loop_can_run_again_on_a_new_event_loop() -> None:
    clock = CountingClock()
    loop = make_loop(config(), clock=clock)

    async def once() -> None:
        loop.start()
        await until(lambda: clock.calls >= 2, "the loop to wait")
        await asyncio.sleep(0.2)
        await loop.stop()

    asyncio.run(once())
    first = clock.calls
    asyncio.run(once())
    # Waiting an hour for its interval, the loop looks at the clock a handful of times.
    assert clock.calls - first < 50, f"{clock.calls - first} checks in 0.2 s"


def test_pressure_releases_at_once_and_at_most_every_few_seconds() -> None:
    async def scenario() -> None:
        clock = FakeClock(0.0)
        loop = make_loop(config(interval_seconds=1000.0), clock=clock)  # last run: t=0
        clock.now = 10.0
        loop.start()
        await until(lambda: clock.calls >= 2, "the loop to start waiting")
        loop.wake_for_pressure(480 * MB)  # far sooner than an interval: honoured anyway
        await until(lambda: loop.releaser.counts[("pressure", "ok")] == 1, "pressure run")
        clock.now = 11.0  # one second later: within PRESSURE_MIN_SECONDS of that run
        seen = clock.calls
        loop.wake_for_pressure(480 * MB)
        await until(lambda: clock.calls >= seen + 2, "the wake to be looked at")
        assert loop.runs == 1
        clock.now = 12.5  # past the spacing: the pending one runs without another wake
        loop.wake(0)  # any wake makes the loop look at the clock again
        await until(lambda: loop.releaser.counts[("pressure", "ok")] == 2, "second run")
        await loop.stop()

    run(scenario)


def test_the_config_comes_from_the_environment_over_the_defaults() -> None:
    assert CleanupConfig.from_env({}) == CleanupConfig()
    config = CleanupConfig.from_env(
        {"MEMORY_CLEANUP": "off", "MEMORY_CLEANUP_INTERVAL": "5",
         "MEMORY_CLEANUP_THRESHOLD_MB": "0", "MEMORY_IDLE_RELEASE_SECONDS": "0"},
        threshold_bytes=32 * MB,
    )  # fmt: skip
    assert config == CleanupConfig(
        enabled=False, interval_seconds=5.0, threshold_bytes=0, idle_release_seconds=0.0
    )
    given = CleanupConfig.from_env({"MEMORY_CLEANUP": "1"}, interval_seconds=30)
    assert given.enabled and given.interval_seconds == 30
    assert CleanupConfig.from_env({"MEMORY_CLEANUP": " "}).enabled  # blank: the default


@pytest.mark.parametrize(
    ("name", "value"),
    [("MEMORY_CLEANUP", "maybe"), ("MEMORY_CLEANUP_INTERVAL", "0"),
     ("MEMORY_CLEANUP_INTERVAL", "soon"), ("MEMORY_CLEANUP_THRESHOLD_MB", "-1"),
     ("MEMORY_IDLE_RELEASE_SECONDS", "inf")],
)  # fmt: skip
def test_a_bad_setting_is_refused_in_one_line_naming_it(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}=") as raised:
        CleanupConfig.from_env({name: value})
    assert "\n" not in str(raised.value)
