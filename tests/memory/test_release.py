"""Releases: results, the log line operators grep for, failures, and no two at once."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from app.memory import release as release_module
from app.memory.allocator import Allocator
from app.memory.release import Releaser, ReleaseResult, force_release_memory
from tests.memory.conftest import BlockingTrim

MB = 1024 * 1024


def rss_sequence(*values: int) -> Callable[[], int]:
    """A read_rss returning the values in turn, then the last one forever."""
    it: Iterator[int] = iter(values)
    last = [values[-1]]

    def read() -> int:
        last[0] = next(it, last[0])
        return last[0]

    return read


def fake_allocator(release: Callable[[], bool] | None, method: str = "malloc_trim") -> Allocator:
    return Allocator("glibc", None, method if release else "none", release)


def result(**overrides: object) -> ReleaseResult:
    values: dict[str, object] = {
        "trigger": "interval",
        "started_at": 1_700_000_000.0,
        "rss_before_bytes": int(380.5 * MB),
        "rss_after_bytes": int(200.2 * MB),
        "gc_collected": 450,
        "allocator": "glibc",
        "method": "malloc_trim",
        "allocator_released": True,
        "duration_seconds": 0.012,
        "ok": True,
    }
    values.update(overrides)
    return ReleaseResult(**values)  # type: ignore[arg-type]


def test_log_line_is_the_documented_one() -> None:
    assert result().log_line() == (
        "Memory Release: 180.3MB freed | RSS: 380.5MB -> 200.2MB | GC collected: 450 objects | "
        "malloc_trim: ok | 12ms (interval)"
    )


def test_log_line_of_a_failure_and_of_gc_only() -> None:
    failed = result(ok=False, error="OSError: boom", allocator_released=None)
    assert "| malloc_trim: failed (OSError: boom) |" in failed.log_line()
    gc_only = result(method="none", allocator_released=None, trigger="admin")
    assert "| no allocator release available (GC only) |" in gc_only.log_line()
    assert gc_only.log_line().endswith("(admin)")


def test_freed_bytes_sign_and_its_log() -> None:
    grown = result(rss_before_bytes=100 * MB, rss_after_bytes=110 * MB)
    assert grown.freed_bytes == -10 * MB  # other threads allocated meanwhile
    assert grown.log_line().startswith("Memory Release: 0.0MB freed | RSS: 100.0MB -> 110.0MB")
    assert result().freed_bytes == int(380.5 * MB) - int(200.2 * MB)


def test_as_dict_has_the_documented_fields() -> None:
    data = result().as_dict()
    assert data["freed_bytes"] == result().freed_bytes
    for key in (
        "rss_before_bytes",
        "rss_after_bytes",
        "freed_bytes",
        "gc_collected",
        "method",
        "duration_seconds",
        "ok",
    ):
        assert key in data


def test_release_measures_around_gc_and_the_allocator(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def trim() -> bool:
        calls.append("trim")
        return True

    releaser = Releaser(fake_allocator(trim), read_rss=rss_sequence(300 * MB, 120 * MB))
    with caplog.at_level(logging.INFO, logger="app.memory.release"):
        done = releaser.release("manual")
    assert done is not None
    assert calls == ["trim"]
    assert (done.rss_before_bytes, done.rss_after_bytes, done.freed_bytes) == (
        300 * MB,
        120 * MB,
        180 * MB,
    )
    assert (done.ok, done.error, done.allocator_released, done.method) == (
        True,
        None,
        True,
        "malloc_trim",
    )
    assert done.gc_collected >= 0
    assert done.duration_seconds >= 0
    assert releaser.last is done
    assert releaser.freed_bytes_total == 180 * MB
    assert [r.getMessage() for r in caplog.records] == [done.log_line()]


def test_failing_allocator_is_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bool:
        raise OSError(12, "cannot allocate")

    releaser = Releaser(fake_allocator(broken), read_rss=rss_sequence(200 * MB, 190 * MB))
    with caplog.at_level(logging.INFO, logger="app.memory.release"):
        done = releaser.release("interval")
    assert done is not None
    assert done.ok is False
    assert done.allocator_released is None
    assert done.error is not None and done.error.startswith("OSError")
    assert releaser.failures == 1
    assert releaser.counts[("interval", "failed")] == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "malloc_trim: failed (OSError" in caplog.records[0].getMessage()


def test_gc_only_allocator_says_so() -> None:
    releaser = Releaser(fake_allocator(None), read_rss=rss_sequence(50 * MB))
    done = releaser.release("admin")
    assert done is not None
    assert (done.ok, done.method, done.allocator_released) == (True, "none", None)
    assert "GC only" in done.log_line()


def test_counts_by_trigger_and_outcome() -> None:
    outcomes = iter([True, False, True])

    def flaky() -> bool:
        if not next(outcomes):
            raise RuntimeError("flaky")
        return True

    releaser = Releaser(fake_allocator(flaky), read_rss=rss_sequence(10 * MB))
    for trigger in ("interval", "interval", "admin"):
        releaser.release(trigger)
    assert dict(releaser.counts) == {
        ("interval", "ok"): 1,
        ("interval", "failed"): 1,
        ("admin", "ok"): 1,
    }
    assert releaser.failures == 1
    assert [r.trigger for r in releaser.history] == ["interval", "interval", "admin"]


def test_history_is_bounded() -> None:
    releaser = Releaser(fake_allocator(lambda: True), read_rss=rss_sequence(MB), history=3)
    for index in range(5):
        releaser.release(f"t{index}")
    assert [r.trigger for r in releaser.history] == ["t2", "t3", "t4"]


def test_releases_never_overlap() -> None:
    trim = BlockingTrim()
    releaser = Releaser(fake_allocator(trim), read_rss=rss_sequence(10 * MB))
    first = threading.Thread(target=releaser.release, args=("interval",))
    first.start()
    try:
        assert trim.entered.wait(5)
        assert releaser.busy
        assert releaser.release("threshold", wait=False) is None
        assert releaser.counts[("threshold", "ok")] == 0
    finally:
        trim.go.set()
        first.join(5)
    assert not releaser.busy
    assert releaser.counts == {("interval", "ok"): 1}


def test_a_waiting_release_runs_after_the_running_one() -> None:
    trim = BlockingTrim()
    releaser = Releaser(fake_allocator(trim), read_rss=rss_sequence(10 * MB))
    results: list[ReleaseResult | None] = []
    first = threading.Thread(target=releaser.release, args=("interval",))
    first.start()
    assert trim.entered.wait(5)
    second = threading.Thread(target=lambda: results.append(releaser.release("admin")))
    second.start()
    trim.go.set()
    first.join(5)
    second.join(5)
    assert len(results) == 1 and results[0] is not None and results[0].trigger == "admin"
    assert [r.trigger for r in releaser.history] == ["interval", "admin"]


def test_release_async_keeps_the_event_loop_serving() -> None:
    trim = BlockingTrim()
    releaser = Releaser(fake_allocator(trim), read_rss=rss_sequence(10 * MB))

    async def scenario() -> ReleaseResult | None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        job = asyncio.create_task(releaser.release_async("idle"))
        while not trim.entered.is_set():
            await asyncio.sleep(0.001)
        start = ticks
        while ticks < start + 20:  # the loop keeps ticking while the trim is held
            await asyncio.sleep(0.001)
        assert not job.done()
        assert await releaser.release_async("threshold", wait=False) is None
        trim.go.set()
        done = await asyncio.wait_for(job, 5)
        tick_task.cancel()
        return done

    done = asyncio.run(scenario())
    assert done is not None and done.trigger == "idle" and done.ok


def test_force_release_memory_really_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release_module, "_default", None)
    done = force_release_memory()
    assert (done.allocator, done.method, done.ok, done.trigger) == (
        "glibc",
        "malloc_trim",
        True,
        "manual",
    )
    assert isinstance(done.allocator_released, bool)
    assert done.rss_before_bytes > 0 and done.rss_after_bytes > 0
    again = force_release_memory("script")
    assert again.trigger == "script"
    assert release_module._default is not None
    assert release_module._default.counts[("script", "ok")] == 1
