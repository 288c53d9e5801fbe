"""The soak's cycles against one started service: the verifier's run (run.execute) again and
again, joined into one timeline on one clock.

Each cycle is a run of its own, with its own Locust process and statistics, so failures are
counted per cycle and every phase is a mark taken when the stage was seen to end, as in the
verifier. It is handed to modes.run_local as the executor, so the service (process tree, cgroup,
or container) is started, sampled and stopped exactly as the verifier does it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psutil

from scripts.verify.core import phases as ph
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.phases import Phase
from scripts.verify.core.progress import Progress
from scripts.verify.core.run import RunResult, RunSettings, Target, execute
from scripts.verify.core.sampling import Clock, Sample, tree_processes
from scripts.verify.core.timeline import Timeline
from scripts.verify.soak.cycles import shift_phases, shift_samples, total_load

# What `docker inspect` says about the container at the end, kept in the timeline.
STATE_KEYS = ("Status", "Running", "OOMKilled", "ExitCode", "Restarting", "StartedAt")


def root_pid(target: Target) -> int | None:
    """The pid of the service's first process on this host: a container's PID 1, or the local
    server; None for a deployed service."""
    pid = getattr(target, "host_pid", None)
    if pid is None:
        process = getattr(target, "process", None)
        pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def process_ids(target: Target) -> list[int]:
    """The service's processes (supervisor and workers), to tell a replaced worker afterwards."""
    pid = root_pid(target)
    if pid is None:
        return []
    try:
        return sorted(p.pid for p in tree_processes(pid))
    except psutil.Error:
        return []


def container_state(target: Target) -> dict[str, Any] | None:
    """`docker inspect`'s State for a container target, read while it still runs; None for a
    target that is no container. RunNotMade when the engine no longer knows the container: the
    engine went away, and what happened to the service cannot be told."""
    state = getattr(target, "state", None)
    if not callable(state):
        return None
    raw = state() or {}
    if raw.get("Status") is None:
        raise RunNotMade("the Docker engine no longer answers for the container (engine stopped?)")
    return {key: raw.get(key) for key in STATE_KEYS}


class CycleRunner:
    """An executor for modes.run_local: ``cycles`` verifier runs on the same service."""

    def __init__(self, cycles: int) -> None:
        self.cycles = cycles

    def __call__(
        self, target: Target, settings: RunSettings, meta: dict[str, Any], progress: Progress
    ) -> RunResult:
        clock = Clock()
        pids_at_start = process_ids(target)
        phases: list[Phase] = []
        samples: list[Sample] = []
        runs: list[RunResult] = []
        died: str | None = None
        for number in range(1, self.cycles + 1):
            cycle = replace(
                settings,
                label=f"{settings.label} cycle {number}",
                out_dir=settings.out_dir / f"cycle-{number}",
            )
            offset = clock.now()
            progress.note(f"cycle {number} of {self.cycles} at {offset:.0f} s")
            line = Progress(
                f"{settings.label} {number}/{self.cycles}", settings.preset.expected_seconds
            )
            run = execute(target, cycle, meta, line)
            runs.append(run)
            phases += shift_phases(run.timeline.phases, offset)
            samples += shift_samples(run.timeline.samples, offset)
            if (why := target.failure()) is not None:
                container_state(target)  # an engine that went away is no verdict on the service
                died = f"{why} in cycle {number}"
                break
        timeline = Timeline(
            meta={
                **runs[0].timeline.meta,
                "label": settings.label,
                "plan": {**runs[0].timeline.meta["plan"], "cycles": self.cycles},
                "cycles_planned": self.cycles,
                "cycles_run": len(runs),
                "sampler_errors": sum(r.timeline.meta.get("sampler_errors", 0) for r in runs),
                "died": died,
                "pids_at_start": pids_at_start,
                "pids_at_end": process_ids(target),
                "container_state": container_state(target),
            },
            phases=phases,
            samples=samples,
            extra={
                "loads": [r.load.as_dict() if r.load else None for r in runs],
                # Each cycle's split at its idle end, and what each cycle left behind.
                "idle_holdings": [
                    (r.timeline.extra.get("holdings") or {}).get(ph.IDLE) for r in runs
                ],
                "stayed": [r.timeline.extra.get("stayed") for r in runs],
            },
        )
        return RunResult(settings.label, timeline, total_load([r.load for r in runs]))
