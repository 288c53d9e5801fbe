"""Prometheus view of the memory manager, read at scrape time (no background sampling)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.memory.cgroup import read_cgroup_memory

if TYPE_CHECKING:
    from app.memory.manager import MemoryManager


class MemoryCollector(Collector):
    def __init__(self, manager: MemoryManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        manager = self.manager
        releaser = manager.releaser
        try:
            rss: int | None = manager.read_rss()
        except Exception:  # psutil/proc failure: leave the gauge out, keep the rest scrapeable
            rss = None
        if rss is not None:
            yield GaugeMetricFamily(
                "memory_rss_bytes", "Resident set size of this process.", value=rss
            )
        yield GaugeMetricFamily(
            "memory_limit_bytes", "Memory limit the manager works to.", value=manager.limit_bytes
        )
        cgroup = read_cgroup_memory()
        if cgroup is not None:
            if cgroup.usage_bytes is not None:
                yield GaugeMetricFamily(
                    "memory_cgroup_usage_bytes",
                    "Container cgroup memory usage, page cache included.",
                    value=cgroup.usage_bytes,
                )
            if cgroup.working_set_bytes is not None:
                yield GaugeMetricFamily(
                    "memory_cgroup_working_set_bytes",
                    "Cgroup usage minus inactive page cache.",
                    value=cgroup.working_set_bytes,
                )
            if cgroup.limit_bytes is not None:
                yield GaugeMetricFamily(
                    "memory_cgroup_limit_bytes", "Container cgroup limit.", value=cgroup.limit_bytes
                )
        releases = CounterMetricFamily(
            "memory_releases", "Memory releases run.", labels=["trigger", "outcome"]
        )
        for (trigger, outcome), count in sorted(releaser.counts.items()):
            releases.add_metric([trigger, outcome], count)
        yield releases
        yield CounterMetricFamily(
            "memory_released_bytes", "RSS returned by releases.", value=releaser.freed_bytes_total
        )
        yield CounterMetricFamily(
            "memory_cleanup_failures", "Cleanup runs that raised.", value=manager.failures
        )
        last = releaser.last
        if last is not None:
            yield GaugeMetricFamily(
                "memory_last_release_duration_seconds",
                "Wall time of the last release.",
                value=last.duration_seconds,
            )
            yield GaugeMetricFamily(
                "memory_last_release_freed_bytes",
                "RSS the last release returned.",
                value=last.freed_bytes,
            )
