"""Prometheus view of the memory manager, read at scrape time (no background sampling)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.memory.admission import BUDGET, PRESSURE, QUEUE_TIMEOUT
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
        yield from _admission_metrics(manager)
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


def _admission_metrics(manager: MemoryManager) -> Iterator[Metric]:
    budget, admission = manager.budget, manager.admission
    if budget is None or admission is None:
        return
    parts = GaugeMetricFamily(
        "memory_budget_bytes", "This worker's memory budget, by part.", labels=["part"]
    )
    for part, value in budget.as_dict().items():
        parts.add_metric([part.removesuffix("_bytes")], value)
    yield parts
    yield GaugeMetricFamily(
        "memory_admission_reserved_bytes",
        "In-flight bytes reserved by admitted requests.",
        value=admission.reserved_bytes,
    )
    yield GaugeMetricFamily(
        "memory_admission_queued", "Requests waiting for a reservation.", value=admission.queued
    )
    yield CounterMetricFamily(
        "memory_admission_admitted", "Requests admitted.", value=admission.admitted
    )
    rejections = CounterMetricFamily(
        "memory_admission_rejections", "Requests refused with 503, by reason.", labels=["reason"]
    )
    for reason in (BUDGET, QUEUE_TIMEOUT, PRESSURE):
        rejections.add_metric([reason], admission.rejections[reason])
    yield rejections
    yield from admission.queue_wait.collect()
    pressure = admission.pressure
    if pressure is not None:
        yield GaugeMetricFamily(
            "memory_admission_shedding",
            "1 while usage is over the high-water mark and new work is refused.",
            value=int(pressure.active),
        )
