"""Prove the service gives memory back: `python -m scripts.verify`.

Starts the service (or reads a deployed one), runs a Locust spike against it, samples memory
every second, waits an idle window of at least two cleanup intervals, and judges:

  exit 0  idle memory under --limit-mb and at least --min-returned of the spike given back
  exit 1  the service failed one of those (or too many requests failed); the numbers say which
  exit 2  the run could not be made (server never healthy, Locust missing, ...); the reason says why

Writes <out>/<run>/timeline.{json,csv}, memory.png, Locust's CSV and the server log, and
<out>/summary.md with the table printed at the end.
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
from scripts.verifier import compare, plot, report
from scripts.verifier.errors import RunNotMade
from scripts.verifier.loadrun import LoadStats
from scripts.verifier.modes import LIMIT_MODES, run_local, run_remote
from scripts.verifier.presets import PRESETS
from scripts.verifier.run import RunResult, RunSettings, judge_timeline
from scripts.verifier.sampling import METRICS
from scripts.verifier.timeline import TimelineError, read_json, write_csv, write_json
from scripts.verifier.verdict import Criteria

log = logging.getLogger("verify")

EXIT_PASS, EXIT_FAIL, EXIT_NOT_MADE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    defaults = Criteria()
    parser = argparse.ArgumentParser(
        prog="python -m scripts.verify",
        description=__doc__.split("\n\n")[1],
        epilog="Exit codes: 0 pass, 1 fail (with the numbers), 2 run not made (with the reason).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_argument_group("what to verify")
    target.add_argument(
        "--profile",
        help="allocator profile to start the service with "
        "(profiles/profiles.toml; default: its default profile)",
    )
    target.add_argument(
        "--compare",
        action="store_true",
        help="run every profile in turn, baseline included, and print one table "
        "with each figure also as a ratio to baseline",
    )
    target.add_argument("--url", help="verify a deployed service instead (reads /debug/memory)")
    target.add_argument(
        "--token",
        default=os.environ.get("ADMIN_TOKEN"),
        help="the service's ADMIN_TOKEN for --url (default: $ADMIN_TOKEN)",
    )
    target.add_argument(
        "--probes",
        type=int,
        default=3,
        help="/debug/memory reads per second with --url, so every replica is seen (default 3)",
    )
    target.add_argument(
        "--from-timeline",
        type=Path,
        metavar="TIMELINE_JSON",
        help="judge a recorded timeline.json again with these criteria; no load",
    )

    run = parser.add_argument_group("how")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="standard",
        help="short: under two minutes per profile (tests, CI); standard: the full "
        "spike for published figures (default)",
    )
    run.add_argument(
        "--limit-mode",
        choices=LIMIT_MODES,
        default="none",
        help="run the local service inside a real memory limit of --limit-mb: a "
        "cgroup v1 memory cgroup (root) or the container image under docker --memory",
    )
    run.add_argument(
        "--web-concurrency",
        type=int,
        default=1,
        help="uvicorn workers for the local service; all are sampled (default 1)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for the local service or container, over the preset's "
        "(repeatable), e.g. --set MEMORY_CLEANUP_THRESHOLD_MB=50",
    )
    run.add_argument("--out", type=Path, help="output folder (default results/<timestamp>/)")
    run.add_argument("--no-plot", action="store_true", help="skip the PNG (needs matplotlib)")

    judge = parser.add_argument_group("verdict")
    judge.add_argument(
        "--limit-mb",
        type=float,
        default=defaults.limit_mb,
        help=f"idle memory must be under this (default {defaults.limit_mb:g}, "
        "the Railway Free plan's limit)",
    )
    judge.add_argument(
        "--min-returned",
        type=float,
        default=defaults.min_returned,
        help="share of the spike (peak - start) that must be gone at the end of the "
        f"idle window (default {defaults.min_returned:g}: the baseline profile, which "
        "never releases, keeps about 80-99%% of it; the others return 60-95%%; what may "
        "stay is allocator slack and interpreter caches)",
    )
    judge.add_argument(
        "--max-failures",
        type=float,
        default=defaults.max_failure_share,
        help=f"share of requests allowed to fail (default {defaults.max_failure_share:g})",
    )
    judge.add_argument(
        "--metric",
        choices=METRICS,
        default="pss",
        help="memory figure judged: pss (default; shared pages counted once across "
        "workers), rss, uss, or cgroup (working set; with a limit or --url)",
    )
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.min_returned <= 1:
        parser.error("--min-returned must be between 0 and 1")
    if args.limit_mb <= 0:
        parser.error("--limit-mb must be positive")
    if args.url and not args.token:
        parser.error("--url needs --token (or ADMIN_TOKEN in the environment)")
    if args.url and (args.compare or args.profile or args.limit_mode != "none"):
        parser.error(
            "--url verifies a deployed service: --compare, --profile, --limit-mode do not apply"
        )
    if args.compare and args.profile:
        parser.error("--compare runs every profile; drop --profile")
    if (
        args.metric == "cgroup"
        and not args.url
        and args.limit_mode == "none"
        and not args.from_timeline
    ):
        parser.error("--metric cgroup needs a cgroup: --limit-mode cgroup|docker, or --url")
    if args.probes < 1:
        parser.error("--probes must be at least 1")
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name or not name.isupper():
            parser.error(f"--set {item!r}: expected NAME=VALUE with an upper-case NAME")
    if args.set and args.url:
        parser.error("--set applies to a service started here, not to --url")


def overrides_of(args: argparse.Namespace) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in args.set)


def write_run(result: RunResult, run_dir: Path, want_plot: bool) -> list[Path]:
    """timeline.json, timeline.csv and (if matplotlib is there) memory.png in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_json(run_dir / "timeline.json", result.timeline),
        write_csv(run_dir / "timeline.csv", result.timeline),
    ]
    if want_plot and plot.plotting_available():
        verdict = "PASS" if result.passed else "FAIL"
        written.append(
            plot.plot(result.timeline, run_dir / "memory.png", f"{result.label}: {verdict}")
        )
    elif want_plot:
        log.warning("matplotlib is not installed: no memory.png (the verdict does not need it)")
    return written


def context_lines(args: argparse.Namespace, mode: str, started: datetime) -> list[str]:
    preset = PRESETS[args.preset]
    plan = preset.plan
    return [
        f"mode: {mode}; preset {preset.name}: {plan.users} users, ramp {plan.ramp_seconds:g} s, "
        f"hold {plan.hold_seconds:g} s, idle window {plan.idle_seconds:g} s",
        f"metric: {args.metric}; limit {args.limit_mb:g} MB; spike to give back "
        f">= {args.min_returned:.0%}; failures <= {args.max_failures:.1%}",
        f"started {started.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs",
    ]


def settings_for(args: argparse.Namespace, label: str, out_dir: Path) -> RunSettings:
    return RunSettings(
        label=label,
        preset=PRESETS[args.preset],
        criteria=Criteria(args.limit_mb, args.min_returned, args.max_failures),
        metric=args.metric,
        out_dir=out_dir,
    )


def finish(
    rows: list[report.Row], out: Path, title: str, context: list[str], baseline: str | None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(report.summary_markdown(title, rows, context, baseline))
    sys.stdout.write(report.render_text(rows, baseline) + "\n")
    sys.stdout.write(f"results in {out}\n")


def verify_timeline(args: argparse.Namespace) -> int:
    try:
        timeline = read_json(args.from_timeline)
    except TimelineError as exc:
        sys.stderr.write(f"verify: run not made: {exc}\n")
        return EXIT_NOT_MADE
    load = timeline.extra.get("load") or {}
    tail = float(timeline.meta.get("idle_tail_seconds", PRESETS["short"].idle_tail_seconds))
    criteria = Criteria(args.limit_mb, args.min_returned, args.max_failures)
    stats = LoadStats.from_dict(load) if load else None
    results = judge_timeline(timeline, criteria, args.metric, tail, stats)
    result = RunResult(
        str(timeline.meta.get("label", args.from_timeline.stem)), timeline, stats, results
    )
    sys.stdout.write(report.render_text(report.rows_for(result)) + "\n")
    return EXIT_PASS if result.passed else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s [verify] %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    if args.from_timeline:
        return verify_timeline(args)
    started = datetime.now().astimezone()
    out = args.out or Path("results") / started.strftime("%Y%m%d-%H%M%S")
    try:
        profiles = load_profiles()
        if args.url:
            result = run_remote(
                args.url, args.token, settings_for(args, "remote", out / "remote"), args.probes
            )
            write_run(result, out / "remote", not args.no_plot)
            finish(
                report.rows_for(result),
                out,
                f"Memory verification: {args.url}",
                context_lines(args, "remote", started),
                None,
            )
            return EXIT_PASS if result.passed else EXIT_FAIL
        if args.compare:

            def one(run: compare.Run) -> RunResult:
                result = run_local(
                    run.profile,
                    settings_for(args, run.label, out / run.label),
                    args.limit_mode,
                    run.web_concurrency or args.web_concurrency,
                    overrides={**run.overrides, **overrides_of(args)},
                )
                write_run(result, out / run.label, not args.no_plot)
                return result

            outcomes = compare.run_all(compare.plan(profiles), one)
            finish(
                compare.all_rows(outcomes),
                out,
                "Allocator profiles compared",
                context_lines(args, f"local, limit mode {args.limit_mode}", started),
                compare.BASELINE,
            )
            return compare.exit_code(outcomes)
        name = profiles.get(args.profile).name
        result = run_local(
            name,
            settings_for(args, name, out / name),
            args.limit_mode,
            args.web_concurrency,
            overrides=overrides_of(args),
        )
        write_run(result, out / name, not args.no_plot)
        finish(
            report.rows_for(result),
            out,
            f"Memory verification: profile {name}",
            context_lines(args, f"local, limit mode {args.limit_mode}", started),
            None,
        )
        return EXIT_PASS if result.passed else EXIT_FAIL
    except (RunNotMade, ProfileError) as exc:
        sys.stderr.write(f"verify: run not made: {exc}\n")
        return EXIT_NOT_MADE
    except KeyboardInterrupt:
        sys.stderr.write("verify: run not made: interrupted\n")
        return EXIT_NOT_MADE


if __name__ == "__main__":
    raise SystemExit(main())
