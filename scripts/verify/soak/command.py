"""Soak the service: `python -m scripts.verify soak`.

Runs the service image under `docker run --memory=500m --memory-swap=500m` (the verifier's
--limit-mode docker) with the default profile, drives it with repeated Locust spikes, each
followed by an idle window, samples memory every second, and judges:

  exit 0  no failed request, no OOM kill, every idle window under --limit-mb, and the idle
          figure of the last cycle within the drift allowed above the first cycle's
  exit 1  one of those failed; the numbers say which
  exit 2  the soak could not be made (no Docker engine, server never healthy, ...); the reason

Writes <out>/timeline.{json,csv}, cycles.csv, memory.png (cycles shaded), summary.md (and the
same as data in soak.json), the server log, and each cycle's Locust CSV in <out>/cycle-<n>/.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app.profiles import ProfileError, load_profiles
from scripts.verify import flags
from scripts.verify.core import plot
from scripts.verify.core.context import command_lines, started_line
from scripts.verify.core.declared import users_for
from scripts.verify.core.errors import EXIT_NOT_MADE, RunNotMade, exit_for
from scripts.verify.core.modes import run_local
from scripts.verify.core.progress import Progress
from scripts.verify.core.run import RunSettings
from scripts.verify.core.timeline import Timeline, TimelineError, read_json, write_csv, write_json
from scripts.verify.core.verdict import Criteria
from scripts.verify.soak import report as soak_report
from scripts.verify.soak.presets import MIN_CYCLES, SOAK_PRESETS, SoakPreset
from scripts.verify.soak.run import CycleRunner
from scripts.verify.soak.verdict import DriftRule, SoakCriteria, SoakOutcome, assess

log = logging.getLogger("soak")


METRIC = "cgroup"  # judged when --metric is not given (with --from-timeline: the recorded one)
METRIC_HELP = (
    "memory figure judged: cgroup (the container's working set; the default), pss, rss, uss; "
    "PSS is reported beside it. With --from-timeline: the recorded one"
)


def add_arguments(parser: flags.Parser) -> None:
    drift = DriftRule()
    parser.add_argument(
        "--preset",
        choices=sorted(SOAK_PRESETS),
        default="default",
        help="; ".join(f"{p.name}: {p.summary}" for p in SOAK_PRESETS.values())
        + " (default: default, about 10 minutes)",
    )
    parser.add_argument("--cycles", type=int, help="cycles instead of the preset's (at least 2)")
    flags.add_profile(parser)
    flags.add_service(parser, limit_mode="docker")
    flags.add_output(parser, "results/soak-<timestamp>/")
    flags.add_verdict(parser, None, METRIC_HELP, SoakCriteria().max_failure_share)
    flags.add_number(
        parser,
        "--max-drift-mb",
        float,
        drift.max_mb,
        "last idle may be this many MB over the first",
    )
    flags.add_number(
        parser,
        "--max-drift-share",
        float,
        drift.max_share,
        "... or this share of the first idle, whichever is larger",
    )


@dataclass(frozen=True)
class SoakOptions:
    """The soak's options, read once from the Namespace: the shared groups, the preset and its
    cycles, the profile and the drift allowed."""

    service: flags.ServiceOptions
    verdict: flags.VerdictOptions  # metric None: METRIC, or the recorded one
    output: flags.OutputOptions
    preset: str = "default"
    cycles: int | None = None  # None: the preset's
    profile: str | None = None
    max_drift_mb: float = DriftRule().max_mb
    max_drift_share: float = DriftRule().max_share
    argv: tuple[str, ...] = ()  # empty where no command line made the run (a test)

    @classmethod
    def of(cls, args: argparse.Namespace) -> SoakOptions:
        return cls(
            service=flags.ServiceOptions.of(args),
            verdict=flags.VerdictOptions.of(args),
            output=flags.OutputOptions.of(args),
            preset=args.preset,
            cycles=args.cycles,
            profile=args.profile,
            max_drift_mb=args.max_drift_mb,
            max_drift_share=args.max_drift_share,
            argv=tuple(args.argv),
        )

    @property
    def metric(self) -> str:
        """The metric a new soak judges: --metric, else the container's working set."""
        return self.verdict.metric or METRIC

    def criteria(self) -> SoakCriteria:
        return SoakCriteria(
            limit_mb=self.verdict.limit_mb,
            max_failure_share=self.verdict.max_failures,
            drift=DriftRule(self.max_drift_mb, self.max_drift_share),
        )


def check_arguments(parser: flags.Parser, options: SoakOptions) -> None:
    verdict, service = options.verdict, options.service
    flags.check_service(parser, service)
    flags.check_verdict(parser, verdict)
    if options.cycles is not None and options.cycles < MIN_CYCLES:
        parser.error(f"--cycles must be at least {MIN_CYCLES}: a drift needs two cycles")
    if options.max_drift_mb < 0 or options.max_drift_share < 0:
        parser.error("--max-drift-mb and --max-drift-share must be >= 0")
    unrecorded = verdict.from_timeline is None
    if verdict.metric is None and service.limit_mode == "none" and unrecorded:
        parser.error("--metric cgroup (the default) needs a cgroup: --limit-mode docker|cgroup")
    flags.needs_cgroup(parser, verdict, service.limit_mode)


def context_lines(
    options: SoakOptions, soak: SoakPreset, profile: str, started: datetime
) -> list[str]:
    preset, plan = soak.cycle, soak.cycle.plan
    service, verdict = options.service, options.verdict
    return [
        *command_lines(options.argv),
        f"profile {profile}, {service.web_concurrency} worker(s), limit mode "
        f"{service.limit_mode}, limit {verdict.limit_mb:g} MB",
        f"preset {soak.name}: {soak.cycles} cycles of {preset.baseline_seconds:g} s at rest, "
        f"{plan.users} users (ramp {plan.ramp_seconds:g} s, hold {plan.hold_seconds:g} s), "
        f"idle window {plan.idle_seconds:g} s; MEMORY_CLEANUP_INTERVAL "
        f"{preset.cleanup_interval_seconds:g} s, CACHE_TTL_SECONDS {preset.cache_ttl_seconds:g} s",
        f"metric {options.metric} (idle = median of the last {preset.idle_tail_seconds:g} s of "
        f"each idle window); failures allowed {verdict.max_failures:.1%}; drift allowed "
        f"{options.criteria().drift.describe()}",
        started_line(started),
    ]


def write_outputs(
    timeline: Timeline, outcome: SoakOutcome, out: Path, context: list[str], want_plot: bool
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    timeline.extra["soak"] = outcome.as_dict()
    write_json(out / "timeline.json", timeline)
    write_csv(out / "timeline.csv", timeline)
    soak_report.write_csv(out / "cycles.csv", outcome.cycles)
    (out / "summary.md").write_text(soak_report.render_markdown(outcome, context))
    summary = soak_report.as_json(outcome, context)
    (out / "soak.json").write_text(json.dumps(summary, indent=1) + "\n")
    if want_plot and plot.plotting_available():
        soak_report.write_plot(outcome, timeline, out / "memory.png")
    elif want_plot:
        log.warning("matplotlib is not installed: no memory.png (the verdict does not need it)")


def judge_recorded(options: SoakOptions, recorded: Path) -> int:
    """Judge the soak's timeline.json at ``recorded`` again with these criteria; no load."""
    try:
        timeline = read_json(recorded)
        metric = options.verdict.metric or str(timeline.meta.get("metric", METRIC))
        outcome = assess(timeline, options.criteria(), metric)
    except (TimelineError, ValueError) as exc:
        sys.stderr.write(f"soak: not made: {exc}\n")
        return EXIT_NOT_MADE
    sys.stdout.write(soak_report.render_text(outcome) + "\n")
    return exit_for(outcome.passed)


def run(options: SoakOptions) -> int:
    if (recorded := options.verdict.from_timeline) is not None:
        return judge_recorded(options, recorded)
    started = datetime.now().astimezone()
    out = options.output.folder(started, "soak-%Y%m%d-%H%M%S")
    soak = SOAK_PRESETS[options.preset].with_cycles(options.cycles)
    service = options.service
    try:
        profile = load_profiles().get(options.profile).name
        label = f"{profile} w{service.web_concurrency}"
        settings = RunSettings(
            label=label,
            preset=soak.cycle,
            criteria=Criteria(limit_mb=options.verdict.limit_mb),
            metric=options.metric,
            out_dir=out,
            users=users_for(None),
        )
        result = run_local(
            profile,
            settings,
            service.limit_mode,
            service.web_concurrency,
            progress=Progress(label, soak.expected_seconds),
            overrides=service.overrides(),
            executor=CycleRunner(soak.cycles),
        )
    except (RunNotMade, ProfileError) as exc:
        sys.stderr.write(f"soak: not made: {exc}\n")
        return EXIT_NOT_MADE
    except KeyboardInterrupt:
        sys.stderr.write("soak: not made: interrupted\n")
        return EXIT_NOT_MADE
    outcome = assess(result.timeline, options.criteria(), options.metric)
    context = context_lines(options, soak, profile, started)
    write_outputs(result.timeline, outcome, out, context, options.output.plot)
    sys.stdout.write(soak_report.render_text(outcome) + "\n")
    sys.stdout.write(f"results in {out}\n")
    return exit_for(outcome.passed)


SUMMARY = "repeated spike/idle cycles in the container under its limit: no OOM, no creep"
COMMAND = flags.Command(
    "soak", SUMMARY, __doc__, add_arguments, SoakOptions.of, check_arguments, run
)
