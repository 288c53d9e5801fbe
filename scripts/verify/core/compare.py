"""Every allocator profile in turn, same load, same machine, one table with ratios to `baseline`.

`baseline` (glibc as shipped, no cleanup) is the plain service the others are measured against;
its own verdict is shown but does not decide the exit code: it is expected to keep its spike.
After the profiles come the variants: a profile run with other server settings, for what is not
an allocator profile but belongs in the same table (worker recycling, as peers do it).

On the user's own command (``compare --command``) each profile is its variables alone
(LD_PRELOAD, MALLOC_CONF, PYTHONMALLOC, GLIBC_TUNABLES, and for baseline MEMORY_CLEANUP=0, which
``CleanupConfig.from_env`` honours), in rounds A B A B, since one run of each on a shared
machine cannot tell a profile from the noise. The table ends with one line: the profile whose
kernel peak was lowest, on average over its rounds, among those that passed in every round.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.launch import library_available
from app.memory.measure import MB
from app.profiles import Profile, ProfileSet
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.report import Row, rows_for
from scripts.verify.core.run import RunResult
from scripts.verify.core.verdict import Figures

BASELINE = "baseline"


@dataclass(frozen=True)
class Run:
    """One row of the comparison: a profile, and for a variant the workers and settings."""

    label: str
    profile: str
    web_concurrency: int | None = None  # None: what the command line asked for
    overrides: Mapping[str, str] = field(default_factory=dict)
    deploy: bool = True
    database: str | None = None  # "postgres": a throwaway cluster, its URL as DATABASE_URL


# Worker recycling instead of releasing: glibc as shipped without the cleanup loop, two workers
# (uvicorn replaces an exited worker only when it runs several), each restarted after 150-250
# requests, so that each restarts several times during the standard spike (about 4,000
# requests here, 20 restarts) and at least once during the short one (about 600).
VARIANTS: tuple[Run, ...] = (
    Run(
        "baseline-recycle",
        "baseline",
        web_concurrency=2,
        overrides={"LIMIT_MAX_REQUESTS": "150", "LIMIT_MAX_REQUESTS_JITTER": "100"},
        deploy=False,
    ),
    # The one Python server that recycles on memory: Granian (dev lock) on the same app, glibc as
    # shipped, cleanup off, one worker respawned once its RSS is over 120 MiB at a 5 s sample
    # (Granian's default is 30 s, longer than the short preset's idle window). The new worker
    # starts before the old one stops; its hot copies go with it, the results stay in the database.
    Run(
        "granian-max-rss",
        "baseline",
        web_concurrency=1,
        overrides={
            "SERVER": "granian",
            "WORKERS_MAX_RSS_MB": "120",
            "GRANIAN_RSS_SAMPLE_INTERVAL": "5",
        },
        deploy=False,
    ),
    # The default profile with its results in PostgreSQL instead of the SQLite file, as Railway's
    # Postgres service gives it: the driver's cost in memory and throughput, in the same run.
    Run("jemalloc-nopymalloc+postgres", "jemalloc-nopymalloc", database="postgres"),
)


@dataclass
class Outcome:
    profile: str  # the row's label: the profile, a variant, or a profile's round ("glibc #2")
    deploy: bool
    result: RunResult | None = None
    not_made: str | None = None
    allocator_profile: str = ""  # the profile the row ran (the label where they are one)

    def __post_init__(self) -> None:
        if not self.allocator_profile:
            self.allocator_profile = self.profile

    def rows(self) -> list[Row]:
        if self.result is None:
            return [Row.not_made(self.profile, self.not_made or "not run")]
        return rows_for(self.result)


# The memory manager's cleanup loop off (CleanupConfig.from_env reads it, here and lifted).
CLEANUP_OFF: Mapping[str, str] = {"MEMORY_CLEANUP": "0"}


def cleanup_off(profile: str) -> Run:
    """``profile`` with the cleanup loop off: beside the profile's own row, what the loop adds on
    top of the allocator. Each row's split says how much of that is the service's data that the
    loop's hooks expired (live objects) and how much the loop's releases returned (free memory
    inside the allocators)."""
    return Run(f"{profile}-cleanup-off", profile, overrides=CLEANUP_OFF, deploy=False)


def plan(
    profiles: ProfileSet,
    names: Sequence[str] | None = None,
    variants: Sequence[Run] | None = None,
    only: Sequence[str] | None = None,
) -> list[Run]:
    """Baseline first (so ratios exist early), the other profiles, then the variants (by
    default the default profile with its cleanup loop off and VARIANTS); with ``only``, just the
    rows of those labels, in that order."""
    ordered = list(names or profiles.names)
    if BASELINE in ordered:
        ordered.remove(BASELINE)
        ordered.insert(0, BASELINE)
    runs = [Run(name, name, deploy=profiles.get(name).deploy) for name in ordered]
    if variants is None:
        variants = (cleanup_off(profiles.default), *VARIANTS)
    runs += [v for v in variants if v.profile in profiles.names]
    if only is None:
        return runs
    by_label = {run.label: run for run in runs}
    unknown = [label for label in only if label not in by_label]
    if unknown:
        raise RunNotMade(f"no such row: {', '.join(unknown)}; rows: {', '.join(by_label)}")
    return [by_label[label] for label in only]


# The variables an allocator profile may set; a profile's own values replace them, and the rest
# are emptied, so a variable the user's shell exported cannot change what a row measures.
ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF", "PYTHONMALLOC", "GLIBC_TUNABLES")


def allocator_environment(profile: Profile) -> dict[str, str]:
    """A profile as a command's environment: its preloaded library, its variables, the others
    empty. RunNotMade where the library is not installed (ld.so would only warn, and the row
    would measure glibc under the profile's name)."""
    if profile.preload and not library_available(profile.preload):
        raise RunNotMade(f"{profile.name}: {profile.preload} is not installed here")
    env = {name: "" for name in ALLOCATOR_VARIABLES}
    env["LD_PRELOAD"] = profile.preload or ""
    env.update(profile.env)
    env["MEMORY_PROFILE"] = profile.name  # said in the service's own status, where it reads it
    return env


def own_plan(
    profiles: ProfileSet, rounds: int, only: Sequence[str] | None = None
) -> list[Run]:
    """Every profile (baseline first) and the default with its cleanup loop off on the user's
    command, ``rounds`` times in turn: A B A B. Each run's environment is the profile's
    (allocator_environment), made when it runs, with the row's settings over it."""
    chosen = plan(profiles, only=only, variants=(cleanup_off(profiles.default),))
    return in_rounds(chosen, rounds)


def in_rounds(runs: Sequence[Run], rounds: int) -> list[Run]:
    """``runs`` ``rounds`` times in turn (A B A B), each labelled with its round ("glibc #2"), so
    a drift of the machine during the comparison reaches every setup alike. One round keeps the
    labels as they are."""
    if rounds == 1:
        return list(runs)
    return [
        dataclasses.replace(run, label=f"{run.label} #{number}")
        for number in range(1, rounds + 1)
        for run in runs
    ]


def folder_of(label: str) -> str:
    """A row's output folder: its label without spaces or the round's #."""
    return label.replace(" #", "-").replace(" ", "-")


def recommendation(outcomes: Sequence[Outcome], profiles: ProfileSet, rounds: int) -> str:
    """One line: the deployable profile with the lowest kernel peak (the cgroup's where the run
    had one, else the processes' RSS) on average over its rounds, among those that passed in
    every one; or that none did. A row that is no deployable setup (the default with its cleanup
    loop off, a peer) runs a profile too, but is not that profile's round."""
    by_profile: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.deploy:
            by_profile.setdefault(outcome.allocator_profile, []).append(outcome)
    candidates: list[tuple[float, str, str, float]] = []
    for name, runs in by_profile.items():
        if not profiles.get(name).deploy or len(runs) < rounds:
            continue
        if not all(o.result is not None and o.result.passed for o in runs):
            continue
        peaks, kind = _kernel_peaks(runs)
        if peaks:
            candidates.append((statistics.mean(peaks), name, kind, max(peaks) - min(peaks)))
    if not candidates:
        return "recommendation: no profile passed in every round; see the reasons above"
    peak, name, kind, spread = min(candidates)
    line = (
        f"recommendation: {name}, the lowest {kind} ({peak / MB:.1f} MB on average over "
        f"{rounds} rounds) among the profiles that passed in every round"
    )
    # A lower mean that its rounds' spread covers is not a difference these rounds can show.
    close = [
        other for mean, other, _, other_spread in sorted(candidates)
        if other != name and mean - peak <= max(spread, other_spread)
    ]  # fmt: skip
    if close:
        line += f"; within the rounds' spread of it: {', '.join(close)}"
    return line


def _kernel_peaks(runs: Sequence[Outcome]) -> tuple[list[float], str]:
    cgroup = [f.cgroup_peak_bytes for f in _figures(runs)]
    if cgroup and all(v is not None for v in cgroup):
        return [float(v) for v in cgroup if v is not None], "cgroup peak"
    rss = [f.rss_peak_bytes for f in _figures(runs)]
    if rss and all(v is not None for v in rss):
        return [float(v) for v in rss if v is not None], "peak RSS"
    return [], ""


def _figures(runs: Sequence[Outcome]) -> list[Figures]:
    found: list[Figures] = []
    for outcome in runs:
        if outcome.result is not None:
            found.extend(r.figures for r in outcome.result.results if r.figures is not None)
    return found


def run_all(runs: Sequence[Run], run_one: Callable[[Run], RunResult]) -> list[Outcome]:
    """Run each in turn; one that cannot run is recorded with its reason and the rest still
    run."""
    outcomes = []
    for run in runs:
        outcome = Outcome(run.label, run.deploy, allocator_profile=run.profile)
        try:
            outcome.result = run_one(run)
        except RunNotMade as exc:
            outcome.not_made = str(exc)
        outcomes.append(outcome)
    return outcomes


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """2 if any profile could not be run, else 1 if a deployable profile failed, else 0."""
    if any(o.result is None for o in outcomes):
        return 2
    deployable = [o for o in outcomes if o.deploy]
    return 0 if all(o.result is not None and o.result.passed for o in deployable) else 1


def all_rows(outcomes: Sequence[Outcome]) -> list[Row]:
    return [row for outcome in outcomes for row in outcome.rows()]
