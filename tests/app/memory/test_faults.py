"""Faults injected into the memory manager: the cleanup loop logs them, counts them in
`memory_cleanup_failures_total`, keeps running, and the service keeps serving.

Each fault is a real failure of the part it stands for: psutil pointed at a /proc that does not
exist, the smaps and cgroup readers pointed at a missing folder, the allocator factory raising
the OSError ctypes raises for a missing libc, a release that raises or that holds past the
interval. Waits are polls with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.memory import allocator as allocator_module
from app.memory import manager as manager_module
from app.memory import metrics as metrics_module
from app.memory.allocator import Allocator, detect_allocator
from app.memory.cgroup import read_cgroup_memory
from app.memory.cleanup import CleanupConfig
from app.memory.manager import MemoryManager
from app.memory.release import Releaser
from app.memory.smaps import read_breakdown

MB = 1024 * 1024
INTERVAL = 0.01  # seconds: many loop runs within a test
RECORD = {"sku": "SKU-00042", "quantity": 3, "unit_price": 9.99, "customer": "c-17"}
# Every run releases: no threshold, no minimum growth since the last release.
EAGER = {
    "memory_cleanup_interval": 0.02,
    "memory_cleanup_threshold_mb": 0,
    "memory_release_min_mb": 0,
    "memory_idle_release_seconds": 0,
}
FAILURES = "memory_cleanup_failures_total"
LOOP_FAILED = "[memory-cleanup] Run failed (interval); the loop goes on"
SKIPPED = "[memory-cleanup] Another release is running; this one is skipped"

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- reading metrics, waiting, injecting ------------------------------------------------------


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(memory: MemoryManager) -> Samples:
    """What a Prometheus scrape of the manager's collector reads."""
    registry = CollectorRegistry()
    registry.register(memory.collector)
    return parse(generate_latest(registry).decode())


def releases(samples: Samples, trigger: str, outcome: str) -> float:
    key = ("memory_releases_total", (("outcome", outcome), ("trigger", trigger)))
    return samples.get(key, 0.0)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """The same on an event loop: the loop under test runs between the polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


def config(**overrides: object) -> CleanupConfig:
    values: dict[str, object] = {
        "interval_seconds": INTERVAL,
        "threshold_bytes": 0,
        "idle_release_seconds": 0.0,
        "release_min_bytes": 0,
    }
    values.update(overrides)
    return CleanupConfig(**values)  # type: ignore[arg-type]


def manager(
    release: Callable[[], bool] | None = lambda: True,
    read_rss: Callable[[], int] = lambda: 300 * MB,
) -> MemoryManager:
    allocator = Allocator("glibc", None, "malloc_trim" if release else "none", release)
    return MemoryManager(config(), 512 * MB, allocator=allocator, read_rss=read_rss)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


class Switch:
    """A fault that can be turned on and off while the loop runs."""

    def __init__(self, fault: Callable[[], BaseException]) -> None:
        self.fault = fault
        self.on = False
        self.raised = 0

    def wrap(self, call: Callable[[], T]) -> Callable[[], T]:
        def faulty() -> T:
            if self.on:
                self.raised += 1
                raise self.fault()
            return call()

        return faulty


class Gate:
    """An allocator release that holds until opened, recording how many ran at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls = 0

    def __call__(self) -> bool:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        try:
            assert self.open.wait(20), "the test never opened the gate"
            return True
        finally:
            with self._lock:
                self.active -= 1


class BrokenProc:
    """psutil reading a /proc that does not exist, what a sandbox without /proc does to it."""

    def __init__(self, missing: Path) -> None:
        self.real = psutil.PROCFS_PATH
        self.missing = str(missing)

    @property
    def on(self) -> bool:
        return bool(self.missing == psutil.PROCFS_PATH)

    @on.setter
    def on(self, broken: bool) -> None:
        psutil.PROCFS_PATH = self.missing if broken else self.real


@pytest.fixture
def broken_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BrokenProc:
    """Off until the test turns it on; psutil reads the real /proc again afterwards."""
    monkeypatch.setattr(psutil, "PROCFS_PATH", psutil.PROCFS_PATH)
    return BrokenProc(tmp_path / "no-proc")


# --- RSS unreadable ---------------------------------------------------------------------------


def test_rss_read_errors_are_logged_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch = Switch(lambda: psutil.NoSuchProcess(os.getpid(), msg="/proc/self/statm unreadable"))
    memory = manager(read_rss=switch.wrap(lambda: 300 * MB))

    async def scenario() -> None:
        memory.start()
        switch.on = True
        await until(lambda: memory.failures >= 3, "three failed runs")
        switch.on = False
        ok_before = memory.releaser.counts[("interval", "ok")]
        await until(lambda: memory.releaser.counts[("interval", "ok")] > ok_before, "a good run")
        assert memory.loop.running
        await memory.stop()

    with caplog.at_level(logging.INFO, logger="app.memory"):
        run(scenario)
    samples = scrape(memory)
    assert samples[(FAILURES, ())] == memory.failures == memory.loop.failures >= 3
    assert switch.raised == memory.loop.failures  # each fault was one failed run, none lost
    assert releases(samples, "interval", "ok") >= 1
    failed = [r for r in caplog.records if r.getMessage() == LOOP_FAILED]
    assert len(failed) == memory.loop.failures
    assert all(r.exc_info and isinstance(r.exc_info[1], psutil.Error) for r in failed)


def test_requests_are_served_while_psutil_cannot_read_proc(
    serve: Callable[..., TestClient], broken_proc: BrokenProc, caplog: pytest.LogCaptureFixture
) -> None:
    # The request-path guard samples RSS at most once an hour here: this test is about the loop
    # (the guard's own handling of the fault is test_guard_survives_an_unreadable_rss).
    client = serve(memory_check_min_seconds=3600, **EAGER)
    memory = client.app.state.memory  # type: ignore[attr-defined]
    assert client.post("/bulk/sync", json={"records": [RECORD]}).status_code == 201
    broken_proc.on = True
    wait_for(lambda: memory.failures >= 3, "three failed cleanup runs")
    for path in ("/bulk/sync", "/bulk/async"):
        created = client.post(path, json={"records": [RECORD]})
        assert created.status_code == 201, created.text
        assert client.get(f"/bulk/{created.json()['id']}").status_code == 200
    assert client.get("/products/SKU-00042").status_code == 200
    assert client.get("/healthz").status_code == 200
    broken_proc.on = False
    failed = memory.failures
    wait_for(lambda: memory.releaser.counts[("interval", "ok")] >= 1, "a run after the fault")
    samples = parse(client.get("/metrics").text)
    assert samples[(FAILURES, ())] >= failed >= 3
    assert memory.loop.running
    assert LOOP_FAILED in caplog.text and "NoSuchProcess" in caplog.text


def test_metrics_scrape_survives_an_unreadable_rss() -> None:
    switch = Switch(lambda: psutil.NoSuchProcess(os.getpid()))
    memory = manager(read_rss=switch.wrap(lambda: 300 * MB))
    memory.loop.failures = 2
    switch.on = True
    samples = scrape(memory)
    assert samples[(FAILURES, ())] == 2


def test_a_release_with_an_unreadable_rss_is_a_failed_release() -> None:
    def unreadable() -> int:
        raise psutil.NoSuchProcess(os.getpid())

    releaser = Releaser(Allocator("glibc", None, "malloc_trim", lambda: True), read_rss=unreadable)
    result = releaser.release("admin")
    assert result is not None and result.ok is False
    assert releaser.failures == 1


def test_guard_survives_an_unreadable_rss(
    serve: Callable[..., TestClient], broken_proc: BrokenProc
) -> None:
    client = serve(memory_check_min_seconds=0.001)
    broken_proc.on = True
    assert client.post("/bulk/sync", json={"records": [RECORD]}).status_code == 201


# --- /proc and the cgroup files unreadable ----------------------------------------------------


def test_unreadable_smaps_and_cgroup_give_partial_answers(
    serve: Callable[..., TestClient],
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "missing"
    breakdown = functools.partial(read_breakdown, proc_root=missing / "proc")
    cgroup = functools.partial(
        read_cgroup_memory, root=missing / "sys/fs/cgroup", proc_self_cgroup=missing / "cgroup"
    )
    monkeypatch.setattr(manager_module, "read_breakdown", breakdown)
    monkeypatch.setattr(manager_module, "read_cgroup_memory", cgroup)
    monkeypatch.setattr(metrics_module, "read_cgroup_memory", cgroup)
    monkeypatch.setattr(
        manager_module, "detect_allocator", functools.partial(detect_allocator, missing / "maps")
    )
    client = serve(admin_token=token, **EAGER)
    memory = client.app.state.memory  # type: ignore[attr-defined]
    wait_for(lambda: memory.releaser.counts[("interval", "ok")] >= 2, "two interval releases")

    report = client.get("/debug/memory", headers={"Authorization": f"Bearer {token}"})
    assert report.status_code == 200
    body = report.json()
    assert body["breakdown"] == [] and body["cgroup"] is None
    assert body["rss_bytes"] > 0  # psutil still reads the real /proc
    assert body["allocator"]["release_method"] == "malloc_trim"  # the libc, found without maps
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    samples = parse(metrics.text)
    assert not [name for name, _ in samples if name.startswith("memory_cgroup_")]
    assert samples[(FAILURES, ())] == 0  # a partial reading is not a failed run
    assert releases(samples, "interval", "ok") >= 2
    assert "cgroup none" in caplog.text


# --- no libc to call --------------------------------------------------------------------------


def test_missing_libc_degrades_to_gc_only_releases(
    serve: Callable[..., TestClient],
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_library() -> Callable[[], bool]:
        raise OSError("libc.so.6: cannot open shared object file: No such file or directory")

    for name, (method, _) in list(allocator_module.RELEASERS.items()):
        monkeypatch.setitem(allocator_module.RELEASERS, name, (method, no_library))
    with caplog.at_level(logging.WARNING, logger="app.memory.allocator"):
        assert detect_allocator().release is None
    assert "release call is unavailable: libc.so.6: cannot open shared object file" in caplog.text
    client = serve(admin_token=token, **EAGER)
    memory = client.app.state.memory  # type: ignore[attr-defined]
    assert memory.allocator.method == "none" and memory.allocator.release is None
    wait_for(lambda: memory.releaser.counts[("interval", "ok")] >= 2, "two GC-only releases")
    done = client.post("/admin/memory/release", headers={"Authorization": f"Bearer {token}"})
    assert done.status_code == 200
    result = done.json()
    assert (result["method"], result["ok"], result["allocator_released"]) == ("none", True, None)
    assert result["gc_collected"] >= 0
    samples = parse(client.get("/metrics").text)
    assert samples[(FAILURES, ())] == 0  # GC only is a degraded mode, not a failure
    assert releases(samples, "interval", "ok") >= 2
    assert "[memory] allocator glibc, release by none" in caplog.text
    assert "no allocator release available (GC only)" in caplog.text


# --- the allocator's release raising ----------------------------------------------------------


def test_failing_releases_are_counted_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch = Switch(lambda: OSError(12, "Cannot allocate memory"))
    memory = manager(release=switch.wrap(lambda: True))

    async def scenario() -> None:
        switch.on = True
        memory.start()
        await until(lambda: memory.releaser.failures >= 3, "three failed releases")
        switch.on = False
        ok_before = memory.releaser.counts[("interval", "ok")]
        await until(lambda: memory.releaser.counts[("interval", "ok")] > ok_before, "recovery")
        assert memory.loop.running
        await memory.stop()

    with caplog.at_level(logging.INFO, logger="app.memory"):
        run(scenario)
    samples = scrape(memory)
    assert samples[(FAILURES, ())] == memory.releaser.failures >= 3
    assert releases(samples, "interval", "failed") == memory.releaser.failures
    assert memory.loop.failures == 0  # the releaser caught it; the run itself did not raise
    assert switch.raised == memory.releaser.failures
    failed = [r for r in memory.releaser.history if not r.ok]
    assert failed and all(r.error == "OSError: [Errno 12] Cannot allocate memory" for r in failed)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("malloc_trim: failed (OSError: [Errno 12]" in w for w in warnings)


def test_requests_are_served_while_every_cleanup_release_fails(
    serve: Callable[..., TestClient],
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = serve(admin_token=token, **EAGER)
    memory = client.app.state.memory  # type: ignore[attr-defined]

    def broken() -> bool:
        raise OSError(12, "Cannot allocate memory")

    faulty = dataclasses.replace(memory.releaser.allocator, release=broken)
    monkeypatch.setattr(memory.releaser, "allocator", faulty)
    served = 0
    while memory.releaser.failures < 5:  # keep serving while the loop fails underneath
        path = ("/bulk/sync", "/bulk/async")[served % 2]
        created = client.post(path, json={"records": [RECORD] * 50})
        assert created.status_code == 201, created.text
        assert client.get(f"/bulk/{created.json()['id']}").status_code == 200
        assert client.get("/healthz").status_code == 200
        served += 1
        assert served < 2000, "the loop never ran a release"
    admin = client.post("/admin/memory/release", headers={"Authorization": f"Bearer {token}"})
    assert admin.status_code == 200
    assert admin.json()["ok"] is False and admin.json()["error"].startswith("OSError")
    samples = parse(client.get("/metrics").text)
    failed = sum(
        value for (name, labels), value in samples.items()
        if name == "memory_releases_total" and ("outcome", "failed") in labels
    )
    assert samples[(FAILURES, ())] == failed >= 6  # interval and threshold runs, and the admin's
    assert releases(samples, "admin", "failed") == 1
    debug = client.get("/debug/memory", headers={"Authorization": f"Bearer {token}"}).json()
    assert debug["cleanup"]["running"] is True and debug["cleanup"]["failures"] >= 6
    assert "malloc_trim: failed (OSError: [Errno 12] Cannot allocate memory)" in caplog.text


# --- a release slower than the interval -------------------------------------------------------


def test_a_slow_release_holds_the_next_runs_without_overlap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    memory = manager(release=gate)

    async def scenario() -> None:
        memory.start()
        await until(gate.entered.is_set, "the first interval release")
        held_at = time.monotonic()
        admin = asyncio.create_task(memory.release("admin"))  # waits for the running one
        memory.loop.wake(600 * MB)  # the request path asking for a threshold run
        assert await memory.releaser.release_async("threshold", wait=False) is None
        # Ten intervals pass while the release is held: the loop starts no run meanwhile.
        await until(lambda: time.monotonic() - held_at > 10 * INTERVAL, "ten intervals")
        assert memory.loop.runs == 1 and not admin.done()
        gate.open.set()
        done = await asyncio.wait_for(admin, 10)
        assert done.trigger == "admin" and done.ok
        await until(lambda: memory.loop.runs >= 4, "the loop going on after the slow release")
        await memory.stop()

    with caplog.at_level(logging.INFO, logger="app.memory"):
        run(scenario)
    assert gate.max_active == 1
    # Results are recorded after the lock is let go, so their order is not asserted.
    triggers = [r.trigger for r in memory.releaser.history]
    assert triggers.count("admin") == 1 and len(triggers) >= 4
    assert memory.failures == 0
    assert scrape(memory)[(FAILURES, ())] == 0


def test_cleanup_runs_skip_while_another_release_is_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    memory = manager(release=gate)

    def skipped() -> int:
        return sum(r.getMessage() == SKIPPED for r in caplog.records)

    async def scenario() -> None:
        admin = asyncio.create_task(memory.release("admin"))
        await until(gate.entered.is_set, "the admin release to start")
        memory.start()
        await until(lambda: skipped() >= 3, "three runs skipped while the admin release holds")
        assert gate.calls == 1  # none of those runs reached the allocator
        gate.open.set()
        await asyncio.wait_for(admin, 10)
        await until(lambda: memory.releaser.counts[("interval", "ok")] >= 1, "a run after it")
        await memory.stop()

    with caplog.at_level(logging.INFO, logger="app.memory"):
        run(scenario)
    assert gate.max_active == 1
    assert memory.loop.runs >= skipped() + 1
    assert memory.failures == 0
