"""Prometheus view of the memory manager, read at scrape time from ``status()`` (no background
sampling). Every name is prefixed with the app's namespace, when it gives one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .admission import BUDGET, PRESSURE, QUEUE_TIMEOUT

if TYPE_CHECKING:
    from .manager import MemoryManager


class MemoryCollector(Collector):
    def __init__(self, manager: MemoryManager, namespace: str = "") -> None:
        self.manager = manager
        self.prefix = f"{namespace}_" if namespace else ""

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.prefix + name, doc, value=value)

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(self.prefix + name, doc, value=value)

    def collect(self) -> Iterator[Metric]:
        status = self.manager.status(detail=False)
        if status["rss_bytes"] is not None:  # unreadable: leave it out, keep the rest
            yield self._gauge("memory_rss_bytes", "Resident set size of this process.",
                              status["rss_bytes"])
        yield self._gauge("memory_limit_bytes", "Memory limit the manager works to.",
                          self.manager.limit_bytes)
        yield from self._cgroup(status["cgroup"])
        releases = CounterMetricFamily(
            self.prefix + "memory_releases", "Memory releases run.", labels=["trigger", "outcome"]
        )
        totals = status["release_totals"]
        for row in totals["by_outcome"]:
            releases.add_metric([row["trigger"], row["outcome"]], row["count"])
        yield releases
        yield self._counter("memory_released_bytes", "RSS returned by releases.",
                            totals["freed_bytes"])
        yield self._counter("memory_cleanup_failures", "Cleanup runs that raised.",
                            status["cleanup"]["failures"])
        yield from self._admission(status)
        yield from self._outbound(status["outbound"])
        if status["releases"]:
            last = status["releases"][-1]
            yield self._gauge("memory_last_release_duration_seconds",
                              "Wall time of the last release.", last["duration_seconds"])
            yield self._gauge("memory_last_release_freed_bytes",
                              "RSS the last release returned.", last["freed_bytes"])

    def _cgroup(self, cgroup: dict[str, Any] | None) -> Iterator[Metric]:
        if cgroup is None:
            return
        for key, name, doc in (
            ("usage_bytes", "memory_cgroup_usage_bytes",
             "Container cgroup memory usage, page cache included."),
            ("working_set_bytes", "memory_cgroup_working_set_bytes",
             "Cgroup usage minus inactive page cache."),
            ("limit_bytes", "memory_cgroup_limit_bytes", "Container cgroup limit."),
        ):
            if cgroup[key] is not None:
                yield self._gauge(name, doc, cgroup[key])

    def _outbound(self, outbound: dict[str, Any]) -> Iterator[Metric]:
        yield self._gauge("memory_outbound_queued_bytes",
                          "Reply bytes held for clients by large replies in progress.",
                          outbound["queued_bytes"])
        yield self._gauge("memory_outbound_responses", "Large replies in progress.",
                          outbound["responses"])
        yield self._counter("memory_outbound_refused",
                            "Large replies answered 503: no room in the outbound budget.",
                            outbound["refused"])

    def _admission(self, status: dict[str, Any]) -> Iterator[Metric]:
        budget, admission = status["budget"], status["admission"]
        if budget is None or admission is None:
            return
        parts = GaugeMetricFamily(
            self.prefix + "memory_budget_bytes", "This worker's memory budget, by part.",
            labels=["part"],
        )
        for part, value in budget.items():
            parts.add_metric([part.removesuffix("_bytes")], value)
        yield parts
        yield self._gauge("memory_admission_reserved_bytes",
                          "In-flight bytes reserved by admitted requests.",
                          admission["reserved_bytes"])
        yield self._gauge("memory_admission_queued", "Requests waiting for a reservation.",
                          admission["queued"])
        yield self._counter("memory_admission_admitted", "Requests admitted.",
                            admission["admitted"])
        rejections = CounterMetricFamily(
            self.prefix + "memory_admission_rejections", "Requests refused with 503, by reason.",
            labels=["reason"],
        )
        for reason in (BUDGET, QUEUE_TIMEOUT, PRESSURE):
            rejections.add_metric([reason], admission["rejections"].get(reason, 0))
        yield rejections
        if self.manager.admission is not None:  # a histogram: its buckets are not figures
            yield from self.manager.admission.queue_wait.collect()
        if admission["pressure_source"] is not None:
            yield self._gauge("memory_admission_shedding",
                              "1 while usage is over the high-water mark and new work is refused.",
                              int(admission["shedding"]))
