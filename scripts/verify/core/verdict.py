"""The figures of a run and the verdict on them: idle under the limit, spike given back.

Every figure the verdict uses is a median of several samples, never one reading: a single sample
can land on a transient allocation and flip a verdict. What the load raised memory to is the
median of the hold phase (the "load level"), not its highest sample: a block held for a second
would otherwise count as a spike that was "given back", and pass a service that kept most of
what it was sent. The highest sample and the kernel's own peak (kernel_peak.py) are reported
beside it: the peak is what the limit and the OOM killer see, the level what the service holds
while it works.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from app.memory.measure import MB
from scripts.verify.core import phases as ph
from scripts.verify.core.kernel_peak import KernelPeak
from scripts.verify.core.sampling import Sample

# Below this, the load did not raise memory enough for a share of it to mean anything (a few
# MB move with every request); the return criterion is then reported as not applicable, and the
# idle may stay at most this far above the start.
MIN_SPIKE_MB = 16.0
# A kernel peak this close to the limit is said in the verdict's notes: one more such moment
# and the kernel reclaims, then kills.
NEAR_LIMIT_SHARE = 0.9
# The project's idle target: memory back within 1.5x of the fresh start. A figure, not a verdict
# criterion: the verdict is about the limit, the target about how well a profile does.
IDLE_TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Criteria:
    limit_mb: float = 500.0
    # Half of what the spike added must be gone by the end of the idle window. The baseline
    # profile (glibc, no cleanup) kept 80-99% of its spike in short runs on 2 cores; profiles
    # with a working release gave back 60-95%; what may stay is allocator slack and caches.
    min_returned: float = 0.5
    max_failure_share: float = 0.01
    min_spike_mb: float = MIN_SPIKE_MB


@dataclass(frozen=True)
class Figures:
    """Bytes and seconds; ``returned`` is None when the spike was too small to judge."""

    metric: str
    start_bytes: int
    peak_bytes: int
    peak_t: float
    idle_bytes: int
    returned: float | None
    seconds_to_return: float | None
    idle_window_seconds: float
    samples: int
    # Seconds from the end of the load until memory was at or under IDLE_TARGET_RATIO x start
    # and stayed there to the end of the idle window; None if it never settled there.
    seconds_to_target: float | None = None
    # The median of the hold phase: what the service held while it worked. The spike and the
    # returned share are measured from it (None in a figure recorded before it was).
    load_level_bytes: int | None = None
    # The kernel's highest marks over the load and the idle window: the memory cgroup's (page
    # cache included, as the limit counts it) and the server's processes' peak RSS (VmHWM,
    # summed). None where the kernel was not read (a run recorded before, or a deployed
    # service, whose status route gives at most its cgroup's).
    cgroup_peak_bytes: int | None = None
    rss_peak_bytes: int | None = None

    @property
    def idle_ratio(self) -> float | None:
        """Idle over start: how far from a fresh process the service came back to."""
        return self.idle_bytes / self.start_bytes if self.start_bytes else None

    @property
    def spike_bytes(self) -> int:
        """What the load raised memory by: its level over the start (the highest sample in a
        figure recorded before the level was)."""
        level = self.load_level_bytes if self.load_level_bytes is not None else self.peak_bytes
        return max(level - self.start_bytes, 0)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class NotEnoughSamples(ValueError):
    """A phase without the samples a figure needs: the run cannot be judged."""


def _values(samples: Sequence[Sample], metric: str) -> list[int]:
    return [v for v in (s.value(metric) for s in samples) if v is not None]


def _median(samples: Sequence[Sample], metric: str, what: str) -> int:
    values = _values(samples, metric)
    if not values:
        raise NotEnoughSamples(f"no {metric} samples for the {what}")
    return int(statistics.median(values))


def compute(
    samples: Sequence[Sample],
    phases: Sequence[ph.Phase],
    metric: str,
    idle_tail_seconds: float,
    min_returned: float = Criteria.min_returned,
    min_spike_mb: float = MIN_SPIKE_MB,
    kernel: KernelPeak | None = None,
) -> Figures:
    """Start (baseline median), load level (hold median), peak (highest sample from load start
    on), idle (median of the last ``idle_tail_seconds`` of the idle window), returned share
    (of the load level's rise) and time to return; with ``kernel``, its peak over the load and
    the idle window.

    Time to return: seconds from the end of the load to the first sample at or below the level
    that passes ``min_returned``. Time to target: seconds from the end of the load to the sample
    after which every one is at or under ``IDLE_TARGET_RATIO`` x start.
    """
    ph.validate(phases)
    baseline = ph.find(phases, ph.BASELINE)
    idle = ph.find(phases, ph.IDLE)
    load_start, load_end = ph.load_window(phases)
    ordered = sorted(samples, key=lambda s: s.t)

    start_samples = [s for s in ordered if baseline.contains(s.t)] or ordered[:1]
    start = _median(start_samples, metric, "start")
    after_start = [
        (s.t, v)
        for s in ph.between(ordered, load_start, idle.end)
        if (v := s.value(metric)) is not None
    ]
    if not after_start:
        raise NotEnoughSamples(f"no {metric} samples during the load and the idle window")
    peak_t, peak = max(after_start, key=lambda tv: tv[1])
    tail = ph.between(ordered, max(idle.end - idle_tail_seconds, idle.start), idle.end)
    idle_value = _median(tail, metric, "idle window's tail")
    hold = ph.find(phases, ph.HOLD)
    held = _values(ph.between(ordered, hold.start, hold.end), metric)
    level = int(statistics.median(held)) if held else int(peak)

    spike = level - start
    returned: float | None = None
    to_return: float | None = None
    if spike >= min_spike_mb * MB:
        returned = (level - idle_value) / spike
        target = level - min_returned * spike
        for t, value in after_start:
            if t >= load_end and value <= target:
                to_return = round(t - load_end, 3)
                break
    return Figures(
        seconds_to_target=_settled(after_start, load_end, IDLE_TARGET_RATIO * start),
        metric=metric,
        start_bytes=start,
        peak_bytes=int(peak),
        peak_t=peak_t,
        idle_bytes=idle_value,
        returned=returned,
        seconds_to_return=to_return,
        idle_window_seconds=round(idle.seconds, 3),
        samples=len(ordered),
        load_level_bytes=level,
        cgroup_peak_bytes=kernel.cgroup_bytes if kernel else None,
        rss_peak_bytes=kernel.rss_bytes if kernel else None,
    )


def _settled(series: Sequence[tuple[float, int]], load_end: float, level: float) -> float | None:
    """Seconds after ``load_end`` from which the series stays at or under ``level``; None where
    it never went over (a 0 would claim a return that never had to happen) or never came back."""
    if all(value <= level for _, value in series):
        return None
    since: float | None = None
    for t, value in series:
        if t < load_end:
            continue
        if value > level:
            since = None
        elif since is None:
            since = t
    return None if since is None else round(max(since - load_end, 0.0), 3)


def judge(figures: Figures, criteria: Criteria, failure_share: float | None = None) -> Verdict:
    """Pass only with idle under the limit, the spike given back, and the requests served."""
    reasons: list[str] = []
    notes: list[str] = []
    idle_mb = figures.idle_bytes / MB
    if idle_mb >= criteria.limit_mb:
        reasons.append(
            f"idle {figures.metric} {idle_mb:.1f} MB is not under the "
            f"{criteria.limit_mb:g} MB limit"
        )
    kept_mb = (figures.idle_bytes - figures.start_bytes) / MB
    if figures.returned is None:
        notes.append(
            f"the load raised memory {figures.spike_bytes / MB:.1f} MB, under "
            f"{criteria.min_spike_mb:g} MB: nothing to give back, return share not judged"
        )
        if kept_mb >= criteria.min_spike_mb:
            reasons.append(
                f"idle {idle_mb:.1f} MB is {kept_mb:.1f} MB over the start "
                f"{figures.start_bytes / MB:.1f} MB, more than the {criteria.min_spike_mb:g} MB "
                "a load this small may leave"
            )
    elif figures.returned < criteria.min_returned:
        level = figures.load_level_bytes or figures.peak_bytes
        reasons.append(
            f"returned {figures.returned:.1%} of the {figures.spike_bytes / MB:.1f} MB the load "
            f"raised memory by, under the {criteria.min_returned:.0%} required "
            f"(start {figures.start_bytes / MB:.1f} MB, load level {level / MB:.1f} MB, "
            f"idle {idle_mb:.1f} MB)"
        )
    notes.extend(_peak_notes(figures, criteria))
    if failure_share is not None and failure_share > criteria.max_failure_share:
        reasons.append(
            f"{failure_share:.1%} of requests failed, over the "
            f"{criteria.max_failure_share:.1%} allowed"
        )
    return Verdict(passed=not reasons, reasons=reasons, notes=notes)


def _peak_notes(figures: Figures, criteria: Criteria) -> list[str]:
    """What the kernel's peak adds to the verdict: whether it was read, and how near the limit
    it came."""
    peaks = [
        (what, value / MB)
        for what, value in (
            ("the cgroup's peak, page cache included,", figures.cgroup_peak_bytes),
            ("the processes' peak RSS", figures.rss_peak_bytes),
        )
        if value is not None
    ]
    if not peaks:
        return ["the kernel's peak was not read (a recorded run, or a status route without one)"]
    return [
        f"{what} {peak_mb:.1f} MB came within {1 - NEAR_LIMIT_SHARE:.0%} of the "
        f"{criteria.limit_mb:g} MB limit"
        for what, peak_mb in peaks
        if peak_mb >= NEAR_LIMIT_SHARE * criteria.limit_mb
    ]
