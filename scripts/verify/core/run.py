"""One verification run: sample a baseline, run the Locust spike, wait out the idle window, judge.

The target is anything that has a base URL, can be sampled and can say whether it died: the
local server tree (ours, or the user's own command), a container, or a deployed service read
through the memory package's status route.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psutil

from app.load import LocustUsers
from loadtest.spike import SpikePlan
from scripts.verify.core import loadrun
from scripts.verify.core import phases as ph
from scripts.verify.core.declared import users_for
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.health import HealthFigures, HealthProbe
from scripts.verify.core.kernel_peak import KernelPeak, recorded_peak
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.presets import Preset
from scripts.verify.core.progress import Progress
from scripts.verify.core.sampling import Clock, Sample, Sampler
from scripts.verify.core.stayed import Split, stayed_line
from scripts.verify.core.timeline import Timeline
from scripts.verify.core.verdict import (
    Criteria,
    Figures,
    NotEnoughSamples,
    Verdict,
    compute,
    judge,
)

# Locust's own start-up and shutdown on top of the planned load, before it counts as hung.
LOCUST_GRACE_SECONDS = 60.0
POLL_SECONDS = 0.25


class Target(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def health_path(self) -> str: ...

    def probe(self, t: float) -> list[Sample]: ...

    def failure(self) -> str | None: ...

    def take_peak(self) -> KernelPeak: ...

    def split(self) -> Split | None: ...


@dataclass
class SeriesResult:
    series: str
    figures: Figures | None
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "figures": self.figures.as_dict() if self.figures else None,
            "verdict": self.verdict.as_dict(),
        }


@dataclass
class RunResult:
    label: str
    timeline: Timeline
    load: LoadStats | None
    results: list[SeriesResult] = field(default_factory=list)
    healthz: HealthFigures | None = None  # /healthz latency while the load ran

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.verdict.passed for r in self.results)


@dataclass(frozen=True)
class RunSettings:
    label: str
    preset: Preset
    criteria: Criteria
    metric: str
    out_dir: Path
    sample_interval: float = 1.0
    # The users of the spike: a --locustfile's, or None for the ones the workload declares.
    users: LocustUsers | None = None


def host_description() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "cpus": psutil.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
    }


def judge_timeline(
    timeline: Timeline,
    criteria: Criteria,
    metric: str,
    idle_tail_seconds: float,
    load: LoadStats | None,
    died: str | None = None,
) -> list[SeriesResult]:
    """Figures and a verdict per series of a timeline (one locally, one per replica remotely)."""
    failure_share = load.failure_share if load else None
    kernel = recorded_peak(timeline.extra)
    series_names = timeline.series() or ["server"]
    results = []
    for series in series_names:
        samples = timeline.of_series(series)
        figures: Figures | None
        try:
            computed = compute(
                samples,
                timeline.phases,
                metric,
                idle_tail_seconds,
                criteria.min_returned,
                criteria.min_spike_mb,
                kernel if len(series_names) == 1 else None,  # one replica's marks, not each's
            )
        except (NotEnoughSamples, ph.PhaseError) as exc:
            figures = None
            verdict = Verdict(False, [f"cannot be judged: {exc}"])
        else:
            figures = computed
            verdict = judge(computed, criteria, failure_share)
        idle = ph.find(timeline.phases, ph.IDLE)
        if figures is not None and not [
            s for s in samples if s.t >= idle.end - 2 * idle_tail_seconds
        ]:
            verdict = Verdict(
                False, [*verdict.reasons, "stopped answering before the idle window ended"]
            )
        if died:
            verdict = Verdict(False, [died, *verdict.reasons], verdict.notes)
        results.append(SeriesResult(series, figures, verdict))
    return results


class _Watch:
    """Waits on the run's clock, keeps the progress line fresh, and notices a dead target."""

    def __init__(
        self, target: Target, sampler: Sampler, clock: Clock, progress: Progress, metric: str
    ) -> None:
        self.target = target
        self.sampler = sampler
        self.clock = clock
        self.progress = progress
        self.metric = metric
        self.died: str | None = None

    def until(
        self,
        phase: str | Callable[[], str],
        seconds: float,
        done: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait ``seconds`` or until ``done()``; False if the deadline passed first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return True
            name = phase() if callable(phase) else phase
            if self.died is None and (why := self.target.failure()) is not None:
                self.died = f"{why} during the {name} phase (at {self.clock.now():.0f} s)"
                return True
            latest = self.sampler.latest()
            self.progress.update(
                name, self.clock.now(), latest.value(self.metric) if latest else None
            )
            time.sleep(POLL_SECONDS)
        return done()


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def cache_ttl(meta: dict[str, Any]) -> float | None:
    """The service's own CACHE_TTL_SECONDS, as its status route gave it before the load."""
    cache = (meta.get("service_at_start") or {}).get("cache") or {}
    ttl = cache.get("ttl_seconds")
    return float(ttl) if isinstance(ttl, int | float) else None


@dataclass(frozen=True)
class Load:
    """One Locust run of the scenario: its plan, which of the users' declared options it takes
    (the spike's or the warm-up's), and where its statistics (``<name>_stats.csv``) and log
    (``<name>.log``) go."""

    plan: SpikePlan
    warmup: bool
    name: str
    phase: Callable[[float], str]  # the phase's name, from seconds since this load began


def spike_of(preset: Preset) -> Load:
    ramp = preset.plan.ramp_seconds
    return Load(
        preset.plan, False, "locust", lambda s: ph.RAMP if s < ramp else ph.HOLD
    )


def warmup_of(preset: Preset) -> Load:
    """One user for the warm-up's seconds, with the users' declared warm-up options (the
    reference workload's: its smallest bodies only): the service's pools, threads and
    first-request caches are made before the start is measured, and what it caches of the
    warm-up is small beside what the spike adds."""
    plan = SpikePlan(users=1, ramp_seconds=0, hold_seconds=preset.warmup_seconds, idle_seconds=0)
    return Load(plan, True, "warmup", lambda _s: ph.WARMUP)


def _run_load(
    target: Target,
    settings: RunSettings,
    watch: _Watch,
    clock: Clock,
    load_start: float,
    ttl_seconds: float | None,
    load: Load,
    users: LocustUsers,
) -> subprocess.Popen[bytes]:
    """Locust from start to exit; RunNotMade if it hangs or fails other than by failed requests."""
    plan = load.plan
    run_dir = settings.out_dir
    options = users.warmup_options if load.warmup else users.spike_options
    argv = loadrun.locust_argv(
        target.base_url, plan, run_dir / load.name, users, options, ttl_seconds
    )
    locust = loadrun.start_locust(argv, run_dir / f"{load.name}.log")
    cut_short: list[str] = []

    def over() -> bool:
        if locust.poll() is not None or watch.died is not None:
            return True
        why = loadrun.unreachable(run_dir / load.name, clock.now() - load_start)
        if why is not None:
            cut_short.append(why)
        return why is not None

    finished = watch.until(
        lambda: load.phase(clock.now() - load_start),
        plan.load_seconds + LOCUST_GRACE_SECONDS,
        over,
    )
    if cut_short:
        _stop(locust)
        raise RunNotMade(f"the scenario cannot reach {target.base_url}: {cut_short[0]}")
    if not finished:
        _stop(locust)
        raise RunNotMade(
            f"Locust still running {plan.load_seconds + LOCUST_GRACE_SECONDS:g} s after start "
            f"(see {run_dir / 'locust.log'})"
        )
    if watch.died is not None:
        _stop(locust)
        return locust
    code = locust.poll()
    if code not in (0, 1):  # 1 = some requests failed; they are counted from the CSV
        raise RunNotMade(f"Locust exited with code {code}: {_tail(run_dir / f'{load.name}.log')}")
    return locust


def execute(
    target: Target, settings: RunSettings, meta: dict[str, Any], progress: Progress
) -> RunResult:
    """Baseline, spike, idle window; the timeline and the verdict. RunNotMade if it cannot."""
    users = settings.users or users_for(None)
    preset, plan = settings.preset, settings.preset.plan
    run_dir = settings.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    # The line counts to this run's own length: an idle window stretched to the service's own
    # cleanup interval (modes.fit_idle) is longer than the preset's.
    progress.total_seconds = preset.expected_seconds
    clock = Clock()
    sampler = Sampler(target.probe, clock, settings.sample_interval).start()
    watch = _Watch(target, sampler, clock, progress, settings.metric)
    locust: subprocess.Popen[bytes] | None = None
    healthz: HealthFigures | None = None
    peaks: dict[str, KernelPeak] = {}
    splits: dict[str, Split | None] = {}
    warmup_start: float | None = None
    try:
        warm = f"a {preset.warmup_seconds:g} s warm-up, " if preset.warmup_seconds else ""
        progress.note(
            f"{warm}baseline {preset.baseline_seconds:g} s, then {plan.users} users "
            f"for {plan.load_seconds:g} s"
        )
        target.take_peak()  # the marks start over here: what came before is not this run's
        if preset.warmup_seconds and watch.died is None:
            warmup_start = clock.now()
            warming = _run_load(
                target, settings, watch, clock, warmup_start, cache_ttl(meta), warmup_of(preset),
                users,
            )
            _stop(warming)
            peaks[ph.WARMUP] = target.take_peak()
        baseline_start = clock.now() if warmup_start is not None else 0.0
        watch.until(ph.BASELINE, preset.baseline_seconds, lambda: watch.died is not None)
        load_start = load_end = idle_end = clock.now()
        peaks[ph.BASELINE] = target.take_peak()
        splits[ph.BASELINE] = target.split()
        if watch.died is None:  # a server that died before the load gets no load
            probe = HealthProbe(target.base_url, target.health_path).start()
            try:
                locust = _run_load(
                    target, settings, watch, clock, load_start, cache_ttl(meta), spike_of(preset),
                    users,
                )
            finally:
                healthz = probe.stop()
            load_end = clock.now()
            peaks[ph.LOAD] = target.take_peak()
            progress.note(f"load done at {load_end:.0f} s; idle window {plan.idle_seconds:g} s")
        if watch.died is None:
            watch.until(ph.IDLE, plan.idle_seconds, lambda: watch.died is not None)
        idle_end = clock.now()
        if watch.died is None:
            peaks[ph.IDLE] = target.take_peak()
            splits[ph.IDLE] = target.split()
    finally:
        samples = sampler.stop()
        if locust is not None:
            _stop(locust)
        progress.finish()

    if not samples:
        raise RunNotMade(f"no memory samples were taken ({sampler.last_error or 'target gone'})")
    load: LoadStats | None
    try:
        load = loadrun.read_stats(run_dir / "locust_stats.csv", users)
    except RunNotMade:
        if watch.died is None:
            raise
        load = None
    if load is not None and watch.died is None:
        loadrun.check_delivered(
            load, users, run_dir / "locust_failures.csv"
        )

    timeline = Timeline(
        meta={
            **meta,
            "label": settings.label,
            "preset": preset.name,
            "plan": {
                "users": plan.users,
                "spawn_rate": plan.effective_spawn_rate,
                "ramp_seconds": plan.ramp_seconds,
                "hold_seconds": plan.hold_seconds,
                "idle_seconds": plan.idle_seconds,
            },
            "idle_tail_seconds": preset.idle_tail_seconds,
            "warmup_seconds": preset.warmup_seconds,
            "metric": settings.metric,
            "locustfile": str(users.file),
            "started_at_unix": clock.started_wall,
            "limit_mb": settings.criteria.limit_mb,
            "min_returned": settings.criteria.min_returned,
            "max_failure_share": settings.criteria.max_failure_share,
            "sample_interval_seconds": settings.sample_interval,
            "started_at": datetime.fromtimestamp(clock.started_wall, UTC).isoformat(
                timespec="seconds"
            ),
            "host": host_description(),
            "sampler_errors": sampler.errors,
        },
        phases=ph.run_phases(
            baseline_start, load_start, plan.ramp_seconds, load_end, idle_end, warmup_start
        ),
        samples=samples,
        extra={
            "kernel_peaks": {name: peak.as_dict() for name, peak in peaks.items()},
            "holdings": {name: s.as_dict() if s else None for name, s in splits.items()},
        },
    )
    results = judge_timeline(
        timeline, settings.criteria, settings.metric, preset.idle_tail_seconds, load, watch.died
    )
    figures = results[0].figures if len(results) == 1 else None
    timeline.extra["stayed"] = stayed_line(
        splits.get(ph.BASELINE), splits.get(ph.IDLE), figures.spike_bytes if figures else 0
    )
    timeline.extra = {
        **timeline.extra,
        "load": load.as_dict() if load else None,
        "results": [r.as_dict() for r in results],
        "healthz": healthz.as_dict() if healthz else None,
    }
    return RunResult(settings.label, timeline, load, results, healthz)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
