"""The soak's verdict: every request served, no OOM kill, every idle window under the limit, and
no upward creep of the idle figure from the first cycle to the last.

Why the last against the first: a service that leaks, or whose allocator keeps a little more
after every spike, ends each idle window higher than the one before; comparing the two ends of
the soak measures the sum of that creep, and each figure is already a median of several samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.memory.measure import MB
from scripts.verify.core.stayed import Split, across_cycles
from scripts.verify.core.timeline import Timeline
from scripts.verify.core.verdict import Verdict
from scripts.verify.soak.cycles import Cycle, cycles_of, loads_of


@dataclass(frozen=True)
class DriftRule:
    """The last cycle's idle figure may be at most ``max_mb`` or ``max_share`` of the first
    cycle's idle figure above it, whichever is larger.

    From soaks of the image under a 500 MB limit on a 2-core machine shared with other work
    (docs/soak.md has the runs): the first idle window is the lowest, and the idle figure then
    rises while the service warms up and levels off, by 7-14% over the presets' 3-4 cycles and
    by up to 29% in soaks of 8 and 16 cycles (one worker level after about 4 cycles, two after
    about 10). In MB the most seen with one worker was +27 MB. 32 MB and 35% cover every healthy
    soak measured, of any length, with room for noise. A purge that stopped working (up to
    CACHE_MAX_MB, 64 MB, kept per worker) fails, and so does a creep of more than about 16 MB a
    cycle over the default's four cycles; a slower leak needs more cycles, as the warm-up levels
    off and a leak keeps adding.
    """

    max_mb: float = 32.0
    max_share: float = 0.35

    def allowed_bytes(self, first_idle_bytes: int) -> float:
        return max(self.max_mb * MB, self.max_share * first_idle_bytes)

    def describe(self) -> str:
        return (
            f"+{self.max_mb:g} MB or +{self.max_share:.0%} of the first idle, whichever is larger"
        )


@dataclass(frozen=True)
class Drift:
    """From the first cycle's idle figure to the last's, in bytes."""

    first_idle_bytes: int
    last_idle_bytes: int
    allowed_bytes: float
    first_cycle: int = 1
    last_cycle: int = 1
    metric: str = ""  # what the idle figures are: "pss", or the judged metric

    @property
    def drift_bytes(self) -> int:
        return self.last_idle_bytes - self.first_idle_bytes

    @property
    def share(self) -> float:
        return self.drift_bytes / self.first_idle_bytes if self.first_idle_bytes else 0.0

    @property
    def within(self) -> bool:
        return self.drift_bytes <= self.allowed_bytes

    def describe(self) -> str:
        return (
            f"idle {self.metric + ' ' if self.metric else ''}"
            f"{self.first_idle_bytes / MB:.1f} MB (cycle {self.first_cycle}) -> "
            f"{self.last_idle_bytes / MB:.1f} MB (cycle {self.last_cycle}): "
            f"{self.drift_bytes / MB:+.1f} MB ({self.share:+.1%}), "
            f"allowed +{self.allowed_bytes / MB:.1f} MB"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "drift_bytes": self.drift_bytes,
            "share": self.share,
            "within": self.within,
        }


def drift_of(cycles: Sequence[Cycle], rule: DriftRule) -> Drift | None:
    """First to last cycle with an idle figure; None with fewer than two such cycles.

    Judged on the processes' memory (summed PSS) where it was sampled, not on the container's
    working set: the working set also holds the page cache of the files the service writes (its
    SQLite database, a result of up to 10 MB each), which grows with the live rows over the first
    cycles, is reclaimed before an OOM kill, and is not something a release can give back. The
    limit is still judged on the working set, each cycle. Without per-process figures (an engine
    in a VM) the judged metric is used."""
    judged = [c for c in cycles if c.figures is not None]
    if len(judged) < 2:
        return None
    first, last = judged[0], judged[-1]
    first_f, last_f = (
        (first.pss, last.pss) if first.pss and last.pss else (first.figures, last.figures)
    )
    assert first_f is not None and last_f is not None
    return Drift(
        first_idle_bytes=first_f.idle_bytes,
        last_idle_bytes=last_f.idle_bytes,
        allowed_bytes=rule.allowed_bytes(first_f.idle_bytes),
        first_cycle=first.index,
        last_cycle=last.index,
        metric=first_f.metric,
    )


@dataclass(frozen=True)
class SoakCriteria:
    limit_mb: float = 500.0
    max_failure_share: float = 0.0  # share of the soak's requests allowed to fail
    drift: DriftRule = field(default_factory=DriftRule)


@dataclass(frozen=True)
class EndState:
    """How the service came through the soak: whether it died, what the container engine and
    the memory cgroup say about OOM kills, and whether any of its processes was replaced (a
    restarted worker starts small again and would hide a creep)."""

    cycles_planned: int
    cycles_run: int
    died: str | None = None
    running: bool | None = None  # docker inspect State.Running; None when not a container
    oom_killed: bool | None = None  # docker inspect State.OOMKilled
    oom_kills: int | None = None  # the memory cgroup's oom_kill count; None without a cgroup
    pids_at_start: tuple[int, ...] = ()
    pids_at_end: tuple[int, ...] = ()

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> EndState:
        state = meta.get("container_state") or {}
        cgroup = meta.get("cgroup") or {}
        return cls(
            cycles_planned=int(meta.get("cycles_planned", 0)),
            cycles_run=int(meta.get("cycles_run", 0)),
            died=meta.get("died"),
            running=state.get("Running") if state else None,
            oom_killed=state.get("OOMKilled") if state else None,
            oom_kills=cgroup.get("oom_kills") if cgroup else None,
            pids_at_start=tuple(meta.get("pids_at_start") or ()),
            pids_at_end=tuple(meta.get("pids_at_end") or ()),
        )

    def describe(self) -> str:
        parts = []
        if self.running is not None:
            parts.append(f"container {'running' if self.running else 'not running'}")
            parts.append(f"OOMKilled {str(bool(self.oom_killed)).lower()}")
        if self.oom_kills is not None:
            parts.append(f"cgroup oom_kill {self.oom_kills}")
        if self.pids_at_end:
            same = set(self.pids_at_start) == set(self.pids_at_end)
            parts.append(
                f"{len(self.pids_at_end)} processes, "
                + ("none replaced" if same else "some replaced")
            )
        return "; ".join(parts) or "no end state recorded"


def _ended_badly(end: EndState) -> list[str]:
    reasons = []
    if end.died:
        reasons.append(end.died)
    if end.cycles_run < end.cycles_planned:
        reasons.append(f"only {end.cycles_run} of {end.cycles_planned} cycles ran")
    if end.oom_kills:
        reasons.append(f"{end.oom_kills} OOM kill(s) in the service's memory cgroup")
    if end.oom_killed:
        reasons.append("docker reports the container OOMKilled")
    if end.running is False and not end.died:
        reasons.append("the container was not running at the end of the soak")
    if end.pids_at_start and end.pids_at_end and set(end.pids_at_start) != set(end.pids_at_end):
        gone = sorted(set(end.pids_at_start) - set(end.pids_at_end))
        new = sorted(set(end.pids_at_end) - set(end.pids_at_start))
        reasons.append(f"server processes were replaced during the soak (gone {gone}, new {new})")
    return reasons


def judge_soak(cycles: Sequence[Cycle], criteria: SoakCriteria, end: EndState) -> Verdict:
    """Pass only if the service lasted, served every request, idled under the limit after every
    cycle, and its idle figure did not creep past the drift rule."""
    reasons = _ended_badly(end)
    notes: list[str] = []
    failures = [(c.index, c.load.failures) for c in cycles if c.load is not None]
    failed = sum(count for _, count in failures)
    requests = sum(c.load.requests for c in cycles if c.load is not None)
    if failed and failed > criteria.max_failure_share * requests:
        per_cycle = ", ".join(f"cycle {i}: {n}" for i, n in failures if n)
        reasons.append(
            f"{failed} of {requests} requests failed ({per_cycle}), over the "
            f"{criteria.max_failure_share:.1%} allowed"
        )
    missing = [c.index for c in cycles if c.load is None]
    if missing:
        notes.append(f"no Locust figures for cycle(s) {missing}")
    for cycle in cycles:
        if cycle.figures is None:
            reasons.append(f"cycle {cycle.index}: no samples to judge its idle window")
            continue
        idle_mb = cycle.figures.idle_bytes / MB
        if idle_mb >= criteria.limit_mb:
            reasons.append(
                f"cycle {cycle.index}: idle {cycle.figures.metric} {idle_mb:.1f} MB is not under "
                f"the {criteria.limit_mb:g} MB limit"
            )
    drift = drift_of(cycles, criteria.drift)
    if drift is None:
        reasons.append("fewer than two cycles with an idle figure: no drift to judge")
    elif not drift.within:
        reasons.append(f"idle memory crept: {drift.describe()} ({criteria.drift.describe()})")
    return Verdict(passed=not reasons, reasons=reasons, notes=notes)


@dataclass(frozen=True)
class SoakOutcome:
    """A judged soak: the cycles' figures, the drift, how the service ended, the verdict."""

    label: str
    metric: str
    cycles: list[Cycle]
    drift: Drift | None
    end: EndState
    verdict: Verdict
    # What each cycle left behind, by part, and the remedy (core/stayed.py); None unread.
    stayed: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": self.metric,
            "cycles": [c.as_dict() for c in self.cycles],
            "drift": self.drift.as_dict() if self.drift else None,
            "end": asdict(self.end),
            "verdict": self.verdict.as_dict(),
            "stayed": self.stayed,
        }


def assess(timeline: Timeline, criteria: SoakCriteria, metric: str) -> SoakOutcome:
    """Judge a soak timeline, live or recorded: the same figures and verdict either way."""
    tail = float(timeline.meta.get("idle_tail_seconds", 5))
    cycles = cycles_of(timeline, metric, tail, loads_of(timeline))
    end = EndState.from_meta(timeline.meta)
    return SoakOutcome(
        label=str(timeline.meta.get("label", "soak")),
        metric=metric,
        cycles=cycles,
        drift=drift_of(cycles, criteria.drift),
        end=end,
        verdict=judge_soak(cycles, criteria, end),
        stayed=across_cycles(
            [Split.from_dict(s) if s else None for s in timeline.extra.get("idle_holdings", [])]
        ),
    )
