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


def check_arguments(parser: flags.Parser, args: argparse.Namespace) -> None:
    flags.check_service(parser, flags.ServiceOptions.of(args))
    verdict = flags.VerdictOptions.of(args)
    flags.check_verdict(parser, verdict)
    if args.cycles is not None and args.cycles < MIN_CYCLES:
        parser.error(f"--cycles must be at least {MIN_CYCLES}: a drift needs two cycles")
    if args.max_drift_mb < 0 or args.max_drift_share < 0:
        parser.error("--max-drift-mb and --max-drift-share must be >= 0")
    if args.metric is None and args.limit_mode == "none" and not args.from_timeline:
        parser.error("--metric cgroup (the default) needs a cgroup: --limit-mode docker|cgroup")
    flags.needs_cgroup(parser, verdict, args.limit_mode)


def criteria_of(args: argparse.Namespace) -> SoakCriteria:
    return SoakCriteria(
        limit_mb=args.limit_mb,
        max_failure_share=args.max_failures,
        drift=DriftRule(args.max_drift_mb, args.max_drift_share),
    )


def context_lines(
    args: argparse.Namespace, soak: SoakPreset, profile: str, started: datetime
) -> list[str]:
    preset, plan = soak.cycle, soak.cycle.plan
    return [
        *command_lines(getattr(args, "argv", None)),  # set by the command line, not by a test
        f"profile {profile}, {args.web_concurrency} worker(s), limit mode {args.limit_mode}, "
        f"limit {args.limit_mb:g} MB",
        f"preset {soak.name}: {soak.cycles} cycles of {preset.baseline_seconds:g} s at rest, "
        f"{plan.users} users (ramp {plan.ramp_seconds:g} s, hold {plan.hold_seconds:g} s), "
        f"idle window {plan.idle_seconds:g} s; MEMORY_CLEANUP_INTERVAL "
        f"{preset.cleanup_interval_seconds:g} s, CACHE_TTL_SECONDS {preset.cache_ttl_seconds:g} s",
        f"metric {args.metric} (idle = median of the last {preset.idle_tail_seconds:g} s of each "
        f"idle window); failures allowed {args.max_failures:.1%}; drift allowed "
        f"{criteria_of(args).drift.describe()}",
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


def judge_recorded(args: argparse.Namespace) -> int:
    try:
        timeline = read_json(args.from_timeline)
        metric = args.metric or str(timeline.meta.get("metric", "cgroup"))
        outcome = assess(timeline, criteria_of(args), metric)
    except (TimelineError, ValueError) as exc:
        sys.stderr.write(f"soak: not made: {exc}\n")
        return EXIT_NOT_MADE
    sys.stdout.write(soak_report.render_text(outcome) + "\n")
    return exit_for(outcome.passed)


def run(args: argparse.Namespace) -> int:
    if args.from_timeline:
        return judge_recorded(args)
    args.metric = args.metric or "cgroup"
    started = datetime.now().astimezone()
    out = args.out or Path("results") / f"soak-{started.strftime('%Y%m%d-%H%M%S')}"
    soak = SOAK_PRESETS[args.preset].with_cycles(args.cycles)
    try:
        profile = load_profiles().get(args.profile).name
        label = f"{profile} w{args.web_concurrency}"
        settings = RunSettings(
            label=label,
            preset=soak.cycle,
            criteria=Criteria(limit_mb=args.limit_mb),
            metric=args.metric,
            out_dir=out,
            users=users_for(None),
        )
        result = run_local(
            profile,
            settings,
            args.limit_mode,
            args.web_concurrency,
            progress=Progress(label, soak.expected_seconds),
            overrides=flags.ServiceOptions.of(args).overrides(),
            executor=CycleRunner(soak.cycles),
        )
    except (RunNotMade, ProfileError) as exc:
        sys.stderr.write(f"soak: not made: {exc}\n")
        return EXIT_NOT_MADE
    except KeyboardInterrupt:
        sys.stderr.write("soak: not made: interrupted\n")
        return EXIT_NOT_MADE
    outcome = assess(result.timeline, criteria_of(args), args.metric)
    write_outputs(
        result.timeline, outcome, out, context_lines(args, soak, profile, started), not args.no_plot
    )
    sys.stdout.write(soak_report.render_text(outcome) + "\n")
    sys.stdout.write(f"results in {out}\n")
    return exit_for(outcome.passed)


SUMMARY = "repeated spike/idle cycles in the container under its limit: no OOM, no creep"
COMMAND = flags.Command(
    "soak", SUMMARY, __doc__, add_arguments, flags.untyped, check_arguments, run
)
