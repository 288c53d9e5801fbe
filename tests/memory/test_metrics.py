"""The Prometheus collector, read the way a scrape reads it."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.memory import CleanupConfig, MemoryManager, Readers
from app.memory.allocator import Allocator
from app.memory.cgroup import CgroupMemory, read_cgroup_memory
from tests.memory.conftest import FIXTURES

MB = 1024 * 1024


def samples(manager: MemoryManager) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(manager.collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def v2_reading() -> CgroupMemory | None:
    tree = FIXTURES / "cgroup" / "v2"
    return read_cgroup_memory(tree / "sys" / "fs" / "cgroup", tree / "proc_self_cgroup")


def manager(
    release: object = lambda: True,
    cgroup: Callable[[], CgroupMemory | None] = v2_reading,
    namespace: str = "",
) -> MemoryManager:
    allocator = Allocator("glibc", None, "malloc_trim", release)  # type: ignore[arg-type]
    readers = Readers(rss=lambda: 300 * MB, cgroup=cgroup)
    return MemoryManager(
        CleanupConfig(), 512 * MB, allocator=allocator, readers=readers, namespace=namespace
    )


def test_every_documented_metric_after_a_release() -> None:
    memory = manager()
    memory.releaser.release("admin")
    values = samples(memory)
    assert values[("memory_rss_bytes", ())] == 300 * MB
    assert values[("memory_limit_bytes", ())] == 512 * MB
    assert values[("memory_cgroup_usage_bytes", ())] == 150 * MB
    assert values[("memory_cgroup_working_set_bytes", ())] == 130 * MB
    assert values[("memory_cgroup_limit_bytes", ())] == 512 * MB
    assert values[("memory_releases_total", (("outcome", "ok"), ("trigger", "admin")))] == 1
    assert values[("memory_released_bytes_total", ())] == 0  # the fake RSS never moves
    assert values[("memory_cleanup_failures_total", ())] == 0
    assert values[("memory_last_release_duration_seconds", ())] >= 0


def test_failures_are_counted() -> None:
    def broken() -> bool:
        raise OSError("no")

    memory = manager(broken)
    memory.releaser.release("interval")
    memory.loop.failures = 2  # runs that raised
    values = samples(memory)
    assert values[("memory_releases_total", (("outcome", "failed"), ("trigger", "interval")))] == 1
    assert values[("memory_cleanup_failures_total", ())] == 3


def test_no_cgroup_no_cgroup_metrics() -> None:
    names = {name for name, _ in samples(manager(cgroup=lambda: None))}
    assert not {n for n in names if n.startswith("memory_cgroup_")}
    assert "memory_last_release_duration_seconds" not in names  # no release yet
    assert {"memory_rss_bytes", "memory_released_bytes_total"} <= names


def test_a_namespace_prefixes_every_name() -> None:
    memory = manager(namespace="svc")
    memory.releaser.release("admin")
    names = {name for name, _ in samples(memory)}
    assert {"svc_memory_rss_bytes", "svc_memory_releases_total"} <= names
    assert all(name.startswith("svc_memory_") for name in names), names


def test_the_scrape_reads_the_status_figures() -> None:
    memory = manager()
    memory.releaser.release("admin")
    status = memory.status(detail=False)
    values = samples(memory)
    assert status.cgroup is not None
    assert values[("memory_rss_bytes", ())] == status.rss_bytes
    assert values[("memory_cgroup_usage_bytes", ())] == status.cgroup.usage_bytes
    assert status.breakdown is None  # the scrape never walks smaps
