"""Faults injected under the served app: requests keep being answered while psutil cannot read
/proc, while smaps and the cgroup files are missing, without a libc to call and while every
release fails. The manager's own handling of each: tests/memory/test_faults.py."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from app import main
from app.memory import MemoryManager, Readers
from app.memory import allocator as allocator_module
from app.memory.allocator import detect_allocator
from app.memory.cgroup import read_cgroup_memory
from app.memory.smaps import read_breakdown
from tests.app.conftest import frame
from tests.memory.test_faults import FAILURES, LOOP_FAILED, parse, releases, wait_for

RECORD = {"sku": "SKU-00042", "quantity": 3, "unit_price": 9.99, "customer": "c-17"}
# Every run releases: no threshold, no minimum growth since the last release.
EAGER = {
    "memory_cleanup_interval": 0.02,
    "memory_cleanup_threshold_mb": 0,
    "memory_release_min_mb": 0,
    "memory_idle_release_seconds": 0,
}

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


def test_requests_are_served_while_psutil_cannot_read_proc(
    serve: Callable[..., TestClient], broken_proc: BrokenProc, caplog: pytest.LogCaptureFixture
) -> None:
    # The request-path guard samples RSS at most once an hour here: this test is about the loop
    # (the guard's own handling of the fault is test_guard_survives_an_unreadable_rss).
    client = serve(memory_check_min_seconds=3600, **EAGER)
    memory = frame(client.app).memory
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


def test_threshold_check_survives_an_unreadable_rss(
    serve: Callable[..., TestClient], broken_proc: BrokenProc
) -> None:
    client = serve(memory_check_min_seconds=0.001)
    broken_proc.on = True
    assert client.post("/bulk/sync", json={"records": [RECORD]}).status_code == 201


def test_unreadable_smaps_and_cgroup_give_partial_answers(
    serve: Callable[..., TestClient],
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "missing"
    readers = Readers(
        breakdown=functools.partial(read_breakdown, proc_root=missing / "proc"),
        cgroup=functools.partial(
            read_cgroup_memory, root=missing / "sys/fs/cgroup", proc_self_cgroup=missing / "cgroup"
        ),
    )
    allocator = detect_allocator(missing / "maps")
    # The app's factory builds its manager with these readers and this allocator.
    built = functools.partial(MemoryManager, allocator=allocator, readers=readers)
    monkeypatch.setattr(main, "MemoryManager", built)
    client = serve(admin_token=token, **EAGER)
    memory = frame(client.app).memory
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
    memory = frame(client.app).memory
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


def test_requests_are_served_while_every_cleanup_release_fails(
    serve: Callable[..., TestClient],
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = serve(admin_token=token, **EAGER)
    memory = frame(client.app).memory

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
