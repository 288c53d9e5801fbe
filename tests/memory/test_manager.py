"""The memory manager: wiring of loop, threshold check, releaser; the /debug/memory report."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from app.memory.allocator import Allocator
from app.memory.cleanup import CleanupConfig
from app.memory.manager import MemoryManager
from app.memory.traffic import TrafficMiddleware

MB = 1024 * 1024


def make(enabled: bool = True, **options: Any) -> MemoryManager:
    allocator = Allocator("glibc", None, "malloc_trim", lambda: True)
    config = CleanupConfig(enabled=enabled, interval_seconds=30, threshold_bytes=64 * MB)
    return MemoryManager(config, 256 * MB, allocator=allocator, **options)


def test_threshold_check_wakes_the_loop_and_shares_the_threshold() -> None:
    memory = make()
    assert memory.threshold_check is not None
    assert memory.threshold_check.threshold_bytes == 64 * MB
    assert memory.middleware(lambda: None).activity is memory.activity  # type: ignore[arg-type]
    assert isinstance(memory.middleware(lambda: None), TrafficMiddleware)  # type: ignore[arg-type]


def test_disabled_cleanup_has_no_threshold_check() -> None:
    assert make(enabled=False).threshold_check is None


def test_release_waits_and_returns_the_result() -> None:
    memory = make()
    done = asyncio.run(memory.release())
    assert done.trigger == "admin" and done.ok
    assert memory.releaser.last is done


def test_status_has_the_documented_shape() -> None:
    memory = make(replica_id="replica-7")
    asyncio.run(memory.release("manual"))
    report = memory.status().as_dict()
    assert report["pid"] == os.getpid()
    assert report["replica_id"] == "replica-7"
    assert report["rss_bytes"] > 0
    assert report["limit_mb"] == 256
    assert report["allocator"] == {
        "name": "glibc",
        "library": None,
        "release_method": "malloc_trim",
        "options": {},
        "heap": None,
    }
    kinds = [entry["kind"] for entry in report["breakdown"]]
    assert "[heap]" in kinds and "file" in kinds
    assert [r["trigger"] for r in report["releases"]] == ["manual"]
    cleanup = report["cleanup"]
    assert cleanup["enabled"] is True and cleanup["running"] is False
    assert (cleanup["interval_seconds"], cleanup["threshold_bytes"]) == (30, 64 * MB)
    assert cleanup["failures"] == 0
    cgroup = report["cgroup"]
    assert cgroup is None or cgroup["version"] in (1, 2)


def test_failures_add_loop_and_releaser() -> None:
    memory = make()
    memory.loop.failures = 2
    memory.releaser.failures = 1
    assert memory.failures == 3
