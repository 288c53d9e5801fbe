"""Prometheus view of the memory manager, read at scrape time from its status (no background
sampling, and nothing but the status: the page and the metrics cannot disagree). Every name is
prefixed with the app's namespace, when it gives one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .admission import BUDGET, PRESSURE, QUEUE_TIMEOUT
from .status import AdmissionStatus, CgroupStatus, DoorStatus, MemoryStatus, OutboundStatus


class MemoryCollector(Collector):
    def __init__(self, read_status: Callable[[], MemoryStatus], namespace: str = "") -> None:
        self.read_status = read_status  # the status without detail: no smaps walk per scrape
        self.prefix = f"{namespace}_" if namespace else ""

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.prefix + name, doc, value=value)

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(self.prefix + name, doc, value=value)

    def collect(self) -> Iterator[Metric]:
        status = self.read_status()
        if status.rss_bytes is not None:  # unreadable: leave it out, keep the rest
            yield self._gauge("memory_rss_bytes", "Resident set size of this process.",
                              status.rss_bytes)
        yield self._gauge("memory_limit_bytes", "Memory limit the manager works to.",
                          status.limit_bytes)
        if status.cgroup is not None:
            yield from self._cgroup(status.cgroup)
        releases = CounterMetricFamily(
            self.prefix + "memory_releases", "Memory releases run.", labels=["trigger", "outcome"]
        )
        totals = status.release_totals
        for row in totals.by_outcome:
            releases.add_metric([row.trigger, row.outcome], row.count)
        yield releases
        yield self._counter("memory_released_bytes", "RSS returned by releases.",
                            totals.freed_bytes)
        yield self._counter("memory_cleanup_failures", "Cleanup runs that raised.",
                            status.cleanup.failures)
        if status.budget is not None and status.admission is not None:
            parts = GaugeMetricFamily(
                self.prefix + "memory_budget_bytes", "This worker's memory budget, by part.",
                labels=["part"],
            )
            for part, value in status.budget.as_dict().items():
                parts.add_metric([part.removesuffix("_bytes")], value)
            yield parts
            yield from self._admission(status.admission)
        yield from self._outbound(status.outbound)
        if status.door is not None:
            yield from self._door(status.door)
        if status.releases:
            last = status.releases[-1]
            yield self._gauge("memory_last_release_duration_seconds",
                              "Wall time of the last release.", last.duration_seconds)
            yield self._gauge("memory_last_release_freed_bytes",
                              "RSS the last release returned.", last.freed_bytes)

    def _outbound(self, outbound: OutboundStatus) -> Iterator[Metric]:
        yield self._gauge("memory_outbound_queued_bytes",
                          "Reply bytes held for clients by large replies in progress.",
                          outbound.queued_bytes)
        yield self._gauge("memory_outbound_responses", "Large replies in progress.",
                          outbound.responses)
        yield self._counter("memory_outbound_refused",
                            "Large replies answered 503: no room in the outbound budget.",
                            outbound.refused)
        yield self._counter("memory_outbound_cut_slow",
                            "Replies ended: a part not taken within its time at the reply floor.",
                            outbound.cut_slow)

    def _door(self, door: DoorStatus) -> Iterator[Metric]:
        yield self._gauge("memory_door_working",
                          "Requests worked on, before their reply or body read.", door.working)
        yield self._gauge("memory_door_waiting", "Requests waiting at the door.", door.waiting)
        yield self._counter("memory_door_refused",
                            "Requests answered 503 after waiting their longest at the door.",
                            door.refused)

    def _cgroup(self, cgroup: CgroupStatus) -> Iterator[Metric]:
        for value, name, doc in (
            (cgroup.usage_bytes, "memory_cgroup_usage_bytes",
             "Container cgroup memory usage, page cache included."),
            (cgroup.working_set_bytes, "memory_cgroup_working_set_bytes",
             "Cgroup usage minus inactive page cache."),
            (cgroup.limit_bytes, "memory_cgroup_limit_bytes", "Container cgroup limit."),
        ):
            if value is not None:
                yield self._gauge(name, doc, value)

    def _admission(self, admission: AdmissionStatus) -> Iterator[Metric]:
        yield self._gauge("memory_admission_reserved_bytes",
                          "In-flight bytes reserved by admitted requests.",
                          admission.reserved_bytes)
        yield self._gauge("memory_admission_queued", "Requests waiting for a reservation.",
                          admission.queued)
        yield self._counter("memory_admission_admitted", "Requests admitted.", admission.admitted)
        rejections = CounterMetricFamily(
            self.prefix + "memory_admission_rejections", "Requests refused with 503, by reason.",
            labels=["reason"],
        )
        for reason in (BUDGET, QUEUE_TIMEOUT, PRESSURE):
            rejections.add_metric([reason], admission.rejections.get(reason, 0))
        yield rejections
        wait = admission.queue_wait
        yield HistogramMetricFamily(
            self.prefix + "memory_admission_queue_wait_seconds",
            "Time admitted requests waited for their reservation.",
            buckets=[(_le(bound), count) for bound, count in wait.buckets],
            sum_value=wait.sum_seconds,
        )
        if admission.pressure_source is not None:
            yield self._gauge("memory_admission_shedding",
                              "1 while usage is over the high-water mark and new work is refused.",
                              int(admission.shedding))


def _le(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)
