"""Soak the service: `python -m scripts.soak`.

Runs the service image under `docker run --memory=500m --memory-swap=500m` (the verifier's
--limit-mode docker) with the default profile, drives it with repeated Locust spikes, each
followed by an idle window, samples memory every second, and judges:

  exit 0  no failed request, no OOM kill, every idle window under --limit-mb, and the idle
          figure of the last cycle within the drift allowed above the first cycle's
  exit 1  one of those failed; the numbers say which
  exit 2  the soak could not be made (no Docker engine, server never healthy, ...); the reason

Writes <out>/timeline.{json,csv}, cycles.csv, memory.png (cycles shaded), summary.md, the
server log, and each cycle's Locust CSV in <out>/cycle-<n>/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from app.profiles import ProfileError, load_profiles
from scripts.verifier import plot, soak_report
from scripts.verifier.errors import RunNotMade
from scripts.verifier.modes import LIMIT_MODES, run_local
from scripts.verifier.progress import Progress
from scripts.verifier.run import RunSettings
from scripts.verifier.sampling import METRICS
from scripts.verifier.soak_presets import MIN_CYCLES, SOAK_PRESETS, SoakPreset
from scripts.verifier.soak_run import CycleRunner
from scripts.verifier.soak_verdict import DriftRule, SoakCriteria, SoakOutcome, assess
from scripts.verifier.timeline import Timeline, TimelineError, read_json, write_csv, write_json
from scripts.verifier.verdict import Criteria
from scripts.verify import EXIT_FAIL, EXIT_NOT_MADE, EXIT_PASS, overrides_of

log = logging.getLogger("soak")


def build_parser() -> argparse.ArgumentParser:
    drift = DriftRule()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description=__doc__.split("\n\n")[1],
        epilog="Exit codes: 0 pass, 1 fail (with the numbers), 2 soak not made (with the reason).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("what and how")
    run.add_argument(
        "--preset",
        choices=sorted(SOAK_PRESETS),
        default="default",
        help="; ".join(f"{p.name}: {p.summary}" for p in SOAK_PRESETS.values())
        + " (default: default, about 10 minutes)",
    )
    run.add_argument("--cycles", type=int, help="cycles instead of the preset's (at least 2)")
    run.add_argument(
        "--profile", help="allocator profile (profiles/profiles.toml; default: its default)"
    )
    run.add_argument(
        "--web-concurrency",
        type=int,
        default=1,
        help="uvicorn workers (WEB_CONCURRENCY); all are sampled and summed (default 1)",
    )
    run.add_argument(
        "--limit-mode",
        choices=LIMIT_MODES,
        default="docker",
        help="docker: the image under docker --memory (default); cgroup: the local service in "
        "a cgroup v1 memory cgroup (root); none: no limit (use --metric pss)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting over the preset's (repeatable)",
    )
    run.add_argument("--out", type=Path, help="output folder (default results/soak-<timestamp>/)")
    run.add_argument("--no-plot", action="store_true", help="skip memory.png")
    run.add_argument(
        "--from-timeline",
        type=Path,
        metavar="TIMELINE_JSON",
        help="judge a recorded soak timeline.json again with these criteria; no load",
    )

    judge = parser.add_argument_group("verdict")
    judge.add_argument(
        "--limit-mb",
        type=float,
        default=500.0,
        help="the memory limit; every idle figure must be under it (default 500)",
    )
    judge.add_argument(
        "--metric",
        choices=METRICS,
        help="memory figure judged: cgroup (the container's working set; the default), pss, "
        "rss, uss; PSS is reported beside it. With --from-timeline: the recorded one",
    )
    judge.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="failed requests allowed over the whole soak (default 0)",
    )
    judge.add_argument(
        "--max-drift-mb",
        type=float,
        default=drift.max_mb,
        help=f"last idle may be this many MB over the first (default {drift.max_mb:g}) ...",
    )
    judge.add_argument(
        "--max-drift-share",
        type=float,
        default=drift.max_share,
        help=f"... or this share of the first idle, whichever is larger "
        f"(default {drift.max_share:g})",
    )
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.cycles is not None and args.cycles < MIN_CYCLES:
        parser.error(f"--cycles must be at least {MIN_CYCLES}: a drift needs two cycles")
    if args.web_concurrency < 1:
        parser.error("--web-concurrency must be at least 1")
    if args.limit_mb <= 0:
        parser.error("--limit-mb must be positive")
    if args.max_failures < 0 or args.max_drift_mb < 0 or args.max_drift_share < 0:
        parser.error("--max-failures, --max-drift-mb and --max-drift-share must be >= 0")
    if args.metric in (None, "cgroup") and args.limit_mode == "none" and not args.from_timeline:
        parser.error("--metric cgroup (the default) needs a cgroup: --limit-mode docker|cgroup")
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name or not name.isupper():
            parser.error(f"--set {item!r}: expected NAME=VALUE with an upper-case NAME")


def criteria_of(args: argparse.Namespace) -> SoakCriteria:
    return SoakCriteria(
        limit_mb=args.limit_mb,
        max_failures=args.max_failures,
        drift=DriftRule(args.max_drift_mb, args.max_drift_share),
    )


def context_lines(
    args: argparse.Namespace, soak: SoakPreset, profile: str, started: datetime
) -> list[str]:
    preset, plan = soak.cycle, soak.cycle.plan
    return [
        f"profile {profile}, {args.web_concurrency} worker(s), limit mode {args.limit_mode}, "
        f"limit {args.limit_mb:g} MB",
        f"preset {soak.name}: {soak.cycles} cycles of {preset.baseline_seconds:g} s at rest, "
        f"{plan.users} users (ramp {plan.ramp_seconds:g} s, hold {plan.hold_seconds:g} s), "
        f"idle window {plan.idle_seconds:g} s; MEMORY_CLEANUP_INTERVAL "
        f"{preset.cleanup_interval_seconds:g} s, CACHE_TTL_SECONDS {preset.cache_ttl_seconds:g} s",
        f"metric {args.metric} (idle = median of the last {preset.idle_tail_seconds:g} s of each "
        f"idle window); failures allowed {args.max_failures}; drift allowed "
        f"{criteria_of(args).drift.describe()}",
        f"started {started.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs",
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
    return EXIT_PASS if outcome.passed else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s [soak] %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
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
        )
        result = run_local(
            profile,
            settings,
            args.limit_mode,
            args.web_concurrency,
            progress=Progress(label, soak.expected_seconds),
            overrides=overrides_of(args),
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
    return EXIT_PASS if outcome.passed else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
