"""One spike, then an idle window: the subcommands `run` (one profile, your own service, or a
deployed one) and `compare` (every profile in turn, one table).

Starts the service (this one through its launcher, yours with --command or --image, or reads a
deployed one with --url), runs a Locust spike against it (the users the workload declares, or
yours with --locustfile, under the same spike-then-idle shape), samples memory
every second, waits an idle window of at least two cleanup intervals, and judges:

  exit 0  idle memory under --limit-mb and at least --min-returned of what the load raised it by
          given back
  exit 1  the service failed one of those (or too many requests failed); the numbers say which
  exit 2  the run could not be made (server never healthy, Locust missing, ...); the reason says why

Writes <out>/<run>/timeline.{json,csv}, memory.png, Locust's CSV and the server log, and
<out>/summary.md with the table printed at the end, and the same as data in <out>/summary.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app.load import LocustUsers
from app.profiles import ProfileError, load_profiles
from scripts.verify import flags
from scripts.verify.core import compare, plot, report, spread
from scripts.verify.core.context import command_lines, shown_path, started_line
from scripts.verify.core.declared import users_for
from scripts.verify.core.errors import EXIT_NOT_MADE, RunNotMade, exit_for
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.modes import OwnService, run_local, run_own, run_remote
from scripts.verify.core.postgres import make_cluster
from scripts.verify.core.presets import PRESETS
from scripts.verify.core.run import RunResult, RunSettings, judge_timeline
from scripts.verify.core.served import HEALTH_PATH, STATUS_PATH
from scripts.verify.core.timeline import TimelineError, read_json, write_csv, write_json
from scripts.verify.core.verdict import Criteria

log = logging.getLogger("verify")

RUN_SUMMARY = "start a service (ours, your --command or --image, or read a --url), spike it, judge"
COMPARE_SUMMARY = "every allocator profile in turn, baseline included, one table against baseline"
METRIC = "pss"  # the metric judged unless --metric names another
METRIC_HELP = (
    "memory figure judged: pss (default; shared pages counted once across workers), rss, uss, "
    "or cgroup (working set; with a limit or --url)"
)


def add_common(parser: flags.Parser) -> None:
    """The flags `run` and `compare` share: the service, the preset, the verdict."""
    defaults = Criteria()
    flags.add_service(parser, limit_mode="none")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="standard",
        help="short: under two minutes per profile (tests, CI); standard: the full "
        "spike for published figures (default)",
    )
    flags.add_output(parser, "results/<timestamp>/")
    parser.add_argument(
        "--min-returned",
        type=float,
        default=defaults.min_returned,
        help="share of what the load raised memory by (the hold's median less the start) that "
        f"must be gone at the end of the idle window (default {defaults.min_returned:g}: the "
        "baseline profile, which never releases, keeps most of it; the others return most; "
        "what may stay is allocator slack and interpreter caches)",
    )


def add_run(parser: flags.Parser) -> None:
    flags.add_profile(parser)
    add_common(parser)
    flags.add_verdict(parser, METRIC, METRIC_HELP, Criteria().max_failure_share)
    own = parser.add_argument_group(
        "your own service",
        "It gets PORT (and {port} in CMD is replaced by it), ADMIN_TOKEN (the token its\n"
        "status route is read with), the preset's MEMORY_CLEANUP_INTERVAL and\n"
        "CACHE_TTL_SECONDS, and --set's settings in its environment.",
    )
    target = own.add_mutually_exclusive_group()
    add_own_command(target)
    target.add_argument(
        "--image",
        metavar="NAME",
        help="run your image under docker --memory=--limit-mb instead (it listens on $PORT)",
    )
    target.add_argument(
        "--url", help="verify a deployed service instead (reads its memory status route)"
    )
    add_own_service(own)
    own.add_argument(
        "--reads-per-second",
        type=int,
        default=3,
        help="status reads per second with --url, so every replica is seen (default 3)",
    )


def add_own_command(parser: flags.Parser | argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--command",
        dest="command_line",  # "command" is the subcommand itself (cli.py)
        metavar="CMD",
        help="start your server command here instead of this service",
    )


def add_own_service(own: argparse._ActionsContainer) -> None:
    """How your service is driven and read: its users, its health and status paths, its token."""
    own.add_argument(
        "--locustfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="your Locust users, run under the spike-then-idle shape (default: the users the "
        "workload declares, app/load.py)",
    )
    own.add_argument(
        "--health",
        default=HEALTH_PATH,
        metavar="PATH",
        help=f"the path that answers 200 once it serves (default {HEALTH_PATH})",
    )
    own.add_argument(
        "--status-path",
        default=STATUS_PATH,
        metavar="PATH",
        help="where memory.install(app, status_token=...) mounts the memory status route "
        f"(default {STATUS_PATH})",
    )
    own.add_argument(
        "--token",
        default=os.environ.get("ADMIN_TOKEN"),
        help="the status route's token: needed with --url; with --command or --image, the "
        "ADMIN_TOKEN given to it (default: $ADMIN_TOKEN, else a random one)",
    )


def add_compare(parser: flags.Parser) -> None:
    add_common(parser)
    flags.add_verdict(parser, METRIC, METRIC_HELP, Criteria().max_failure_share, recorded=False)
    parser.add_argument(
        "--rows",
        help="only these rows, comma-separated, in this order (default: every profile, then "
        "baseline-recycle, granian-max-rss and jemalloc-nopymalloc+postgres; with --command, "
        "every profile)",
    )
    own = parser.add_argument_group(
        "your own service",
        "With --command, every profile's variables (LD_PRELOAD, MALLOC_CONF, PYTHONMALLOC,\n"
        "GLIBC_TUNABLES, and MEMORY_CLEANUP=0 for baseline) are set for your command, in\n"
        "rounds A B A B, and the table ends with the profile that had the lowest kernel peak\n"
        "among those that passed in every round.",
    )
    add_own_command(own)
    add_own_service(own)
    own.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="how many times each row runs, in turn: A B A B (default 2; the table ends with "
        "each setup's mean and spread)",
    )


@dataclass(frozen=True)
class OwnServiceOptions:
    """add_own_command's and add_own_service's flags: the user's server command (None: this
    service) and how a service is driven and read, as run and compare both take them."""

    command_line: str | None
    locustfile: Path | None
    health: str = HEALTH_PATH
    status_path: str = STATUS_PATH
    token: str | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> OwnServiceOptions:
        return cls(args.command_line, args.locustfile, args.health, args.status_path, args.token)

    def service(self, image: str | None = None) -> OwnService:
        """The user's service as the modes start it: this command, or ``image``."""
        return OwnService(self.command_line, image, self.health, self.status_path, self.token)


@dataclass(frozen=True)
class SpikeOptions:
    """What run and compare share (add_common, add_verdict, the own service): one spike's
    service, preset, verdict and output, and the command line that asked for it."""

    service: flags.ServiceOptions
    verdict: flags.VerdictOptions
    output: flags.OutputOptions
    own: OwnServiceOptions
    preset: str = "standard"
    min_returned: float = Criteria().min_returned
    argv: tuple[str, ...] = ()  # empty where no command line made the run (a test)

    @classmethod
    def of(cls, args: argparse.Namespace) -> SpikeOptions:
        return cls(
            service=flags.ServiceOptions.of(args),
            verdict=flags.VerdictOptions.of(args),
            output=flags.OutputOptions.of(args),
            own=OwnServiceOptions.of(args),
            preset=args.preset,
            min_returned=args.min_returned,
            argv=tuple(args.argv),
        )

    @property
    def metric(self) -> str:
        """The metric judged: add_verdict gives --metric its default here, so METRIC is only
        for the type (soak's --metric has none)."""
        return self.verdict.metric or METRIC

    def criteria(self) -> Criteria:
        return Criteria(self.verdict.limit_mb, self.min_returned, self.verdict.max_failures)


@dataclass(frozen=True)
class RunOptions:
    """`run`'s options: the shared ones, and which service it verifies: a profile of this one,
    the user's --command (in spike.own) or --image, or a deployed --url."""

    spike: SpikeOptions
    profile: str | None = None
    image: str | None = None
    url: str | None = None
    reads_per_second: int = 3

    @classmethod
    def of(cls, args: argparse.Namespace) -> RunOptions:
        return cls(SpikeOptions.of(args), args.profile, args.image, args.url, args.reads_per_second)


@dataclass(frozen=True)
class CompareOptions:
    """`compare`'s options: the shared ones, the rows asked for (None: every row) and, with
    --command, the rounds."""

    spike: SpikeOptions
    rows: tuple[str, ...] | None = None
    rounds: int = 2

    @classmethod
    def of(cls, args: argparse.Namespace) -> CompareOptions:
        rows = tuple(label.strip() for label in args.rows.split(",")) if args.rows else None
        return cls(SpikeOptions.of(args), rows, args.rounds)


def check_common(parser: flags.Parser, spike: SpikeOptions, remote: bool = False) -> None:
    flags.check_service(parser, spike.service)
    flags.check_verdict(parser, spike.verdict)
    flags.needs_cgroup(parser, spike.verdict, spike.service.limit_mode, remote)
    if not 0 <= spike.min_returned <= 1:
        parser.error("--min-returned must be between 0 and 1")


def check_compare(parser: flags.Parser, options: CompareOptions) -> None:
    spike, own = options.spike, options.spike.own
    check_common(parser, spike)
    if own.command_line is None:
        if options.rounds < 1:
            parser.error("--rounds must be at least 1")
        if own.locustfile is not None:
            parser.error("--locustfile goes with --command: this service runs its own")
        return
    if spike.service.limit_mode == "docker":
        parser.error("--command runs here: --limit-mode none or cgroup")
    if spike.service.web_concurrency != 1:
        parser.error("--command runs your service: its workers are its own (--web-concurrency)")
    if options.rounds < 2:
        parser.error("--rounds must be at least 2: one round cannot show the spread")
    check_own_service(parser, own)


def check_own_service(parser: flags.Parser, own: OwnServiceOptions) -> None:
    """The options add_own_service defines, as run and compare both take them."""
    if own.locustfile is not None and not own.locustfile.is_file():
        parser.error(f"--locustfile {own.locustfile}: no such file")
    if not (own.health.startswith("/") and own.status_path.startswith("/")):
        parser.error("--health and --status-path are paths: they start with /")


def check_run(parser: flags.Parser, options: RunOptions) -> None:
    spike, service = options.spike, options.spike.service
    check_common(parser, spike, remote=bool(options.url or options.image))
    if options.url and not spike.own.token:
        parser.error("--url needs --token (or ADMIN_TOKEN in the environment)")
    if options.url and (options.profile or service.limit_mode != "none" or service.settings):
        parser.error("--url reads a deployed service: --profile, --limit-mode, --set do not apply")
    command_line = spike.own.command_line
    own = "--command" if command_line else "--image" if options.image else None
    if own and options.profile:
        parser.error(f"{own} runs your service: its allocator is its own, --profile does not apply")
    if own and service.web_concurrency != 1:
        parser.error(f"{own} runs your service: its workers are its own (--web-concurrency)")
    if command_line and service.limit_mode == "docker":
        parser.error("--command runs here: --limit-mode none or cgroup (for docker, --image)")
    if options.image and service.limit_mode == "cgroup":
        parser.error("--image runs under docker --memory: --limit-mode cgroup does not apply")
    check_own_service(parser, spike.own)
    if options.reads_per_second < 1:
        parser.error("--reads-per-second must be at least 1")


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


def context_lines(
    spike: SpikeOptions, mode: str, started: datetime, results: Sequence[RunResult] = ()
) -> list[str]:
    preset = PRESETS[spike.preset]
    plan = preset.plan
    verdict = spike.verdict
    return [
        *command_lines(spike.argv),
        f"mode: {mode}; preset {preset.name}: a {preset.warmup_seconds:g} s warm-up, "
        f"{plan.users} users, ramp {plan.ramp_seconds:g} s, hold {plan.hold_seconds:g} s, "
        f"idle window {plan.idle_seconds:g} s",
        f"metric: {spike.metric}; limit {verdict.limit_mb:g} MB; of what the load raised memory "
        f"by, give back >= {spike.min_returned:.0%}; failures <= {verdict.max_failures:.1%}",
        f"scenario: {scenario_of(users_for(spike.own.locustfile))}",
        started_line(started) + f"; {pythons(results)}",
    ]


def pythons(results: Sequence[RunResult]) -> str:
    """Which Python ran the verifier, and which the service (its status route says; a
    service whose route was not read is said so)."""
    found = sorted({
        str(version)
        for result in results
        if (version := (result.timeline.meta.get("service_at_start") or {}).get("python"))
    })  # fmt: skip
    service = f"the service Python {', '.join(found)}" if found else "the service's Python unread"
    return f"the verifier Python {platform.python_version()}, {service}"


def scenario_of(users: LocustUsers) -> str:
    about = f" ({users.about})" if users.about else ""
    return f"{shown_path(users.file)}{about} under the spike-then-idle shape (loadtest/shape.py)"


def settings_for(spike: SpikeOptions, label: str, out_dir: Path) -> RunSettings:
    """The run's settings, its users resolved now: a missing declaration stops the run before
    any server starts."""
    return RunSettings(
        label=label,
        preset=PRESETS[spike.preset],
        criteria=spike.criteria(),
        metric=spike.metric,
        out_dir=out_dir,
        users=users_for(spike.own.locustfile),
    )


def finish(
    rows: list[report.Row], out: Path, title: str, context: list[str], baseline: str | None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    markdown = report.summary_markdown(title, rows, context, baseline)
    if (section := spread.section(rows)) is not None:
        markdown += f"\n{section}\n"
    (out / "summary.md").write_text(markdown)
    summary = report.summary_json(title, rows, context, baseline)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    sys.stdout.write(report.render_text(rows, baseline) + "\n")
    if found := spread.setups(rows):
        sys.stdout.write(f"{spread.render_text(found)}\n{spread.SPREAD_LINE}\n")
    sys.stdout.write(f"results in {out}\n")


def verify_timeline(spike: SpikeOptions, recorded: Path) -> int:
    """Judge the timeline.json at ``recorded`` again with these criteria; no load."""
    try:
        timeline = read_json(recorded)
    except TimelineError as exc:
        sys.stderr.write(f"verify: run not made: {exc}\n")
        return EXIT_NOT_MADE
    load = timeline.extra.get("load") or {}
    tail = float(timeline.meta.get("idle_tail_seconds", PRESETS["short"].idle_tail_seconds))
    stats = LoadStats.from_dict(load) if load else None
    results = judge_timeline(timeline, spike.criteria(), spike.metric, tail, stats)
    result = RunResult(str(timeline.meta.get("label", recorded.stem)), timeline, stats, results)
    sys.stdout.write(report.render_text(report.rows_for(result)) + "\n")
    return exit_for(result.passed)


def out_of(spike: SpikeOptions, started: datetime) -> Path:
    return spike.output.folder(started, "%Y%m%d-%H%M%S")


def not_made(run: Callable[[], int]) -> int:
    """Run ``run``; a run that could not be made is exit 2 with its one-line reason."""
    try:
        return run()
    except (RunNotMade, ProfileError) as exc:
        sys.stderr.write(f"verify: run not made: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("verify: run not made: interrupted\n")
    return EXIT_NOT_MADE


def run_one(options: RunOptions, started: datetime) -> int:
    spike = options.spike
    users_for(spike.own.locustfile)  # no users to run: one line, before anything is started
    out = out_of(spike, started)
    plot_it = spike.output.plot
    if options.url:
        assert spike.own.token is not None  # check_run: --url needs a token
        settings = settings_for(spike, "remote", out / "remote")
        result = run_remote(
            options.url, spike.own.token, settings, options.reads_per_second, None,
            spike.own.status_path, spike.own.health,
        )  # fmt: skip
        write_run(result, out / "remote", plot_it)
        title, mode = f"Memory verification: {options.url}", "remote"
    elif spike.own.command_line or options.image:
        label = "command" if spike.own.command_line else "image"
        limit_mode = "docker" if options.image else spike.service.limit_mode
        result = run_own(
            spike.own.service(options.image), settings_for(spike, label, out / label), limit_mode,
            overrides=spike.service.overrides(),
        )  # fmt: skip
        write_run(result, out / label, plot_it)
        what = f"`{spike.own.command_line}`" if spike.own.command_line else f"image {options.image}"
        title, mode = f"Memory verification: {what}", f"your {label}, limit mode {limit_mode}"
    else:
        name = load_profiles().get(options.profile).name
        result = run_local(
            name,
            settings_for(spike, name, out / name),
            spike.service.limit_mode,
            spike.service.web_concurrency,
            overrides=spike.service.overrides(),
        )
        write_run(result, out / name, plot_it)
        title = f"Memory verification: profile {name}"
        mode = f"local, limit mode {spike.service.limit_mode}"
    context = context_lines(spike, mode, started, [result])
    finish(report.rows_for(result), out, title, context, None)
    return exit_for(result.passed)


def run_command(options: RunOptions) -> int:
    if (recorded := options.spike.verdict.from_timeline) is not None:
        return verify_timeline(options.spike, recorded)
    started = datetime.now().astimezone()
    return not_made(lambda: run_one(options, started))


def compare_own(options: CompareOptions, started: datetime) -> int:
    """Every profile's variables set for the user's command, in rounds A B A B."""
    spike = options.spike
    out = out_of(spike, started)
    own = spike.own.service()
    profiles = load_profiles()

    def one(run: compare.Run) -> RunResult:
        settings = settings_for(spike, run.label, out / compare.folder_of(run.label))
        allocator = compare.allocator_environment(profiles.get(run.profile))
        overrides = {**allocator, **run.overrides, **spike.service.overrides()}
        result = run_own(own, settings, spike.service.limit_mode, overrides=overrides)
        write_run(result, settings.out_dir, spike.output.plot)
        return result

    runs = compare.own_plan(profiles, options.rounds, options.rows)
    outcomes = compare.run_all(runs, one)
    rows = compare.all_rows(outcomes)
    done = [o.result for o in outcomes if o.result is not None]
    mode = f"your command, limit mode {spike.service.limit_mode}"
    context = context_lines(spike, mode, started, done)
    context.append(compare.recommendation(outcomes, profiles, options.rounds))
    finish(rows, out, f"Allocator profiles compared on `{spike.own.command_line}`", context,
           rows[0].label if rows else None)  # fmt: skip
    sys.stdout.write(context[-1] + "\n")
    return compare.exit_code(outcomes)


def compare_all(options: CompareOptions, started: datetime) -> int:
    spike = options.spike
    users_for(spike.own.locustfile)  # no users to run: one line, before anything is started
    if spike.own.command_line:
        return compare_own(options, started)
    out = out_of(spike, started)
    settings = spike.service.overrides()

    def one(run: compare.Run) -> RunResult:
        with database_for(run) as database:
            result = run_local(
                run.profile,
                settings_for(spike, run.label, out / compare.folder_of(run.label)),
                spike.service.limit_mode,
                run.web_concurrency or spike.service.web_concurrency,
                overrides={**run.overrides, **database, **settings},
            )
        write_run(result, out / compare.folder_of(run.label), spike.output.plot)
        return result

    profiles = load_profiles()
    runs = compare.in_rounds(compare.plan(profiles, only=options.rows), options.rounds)
    outcomes = compare.run_all(runs, one)
    rows = compare.all_rows(outcomes)
    context = context_lines(
        spike,
        f"local, limit mode {spike.service.limit_mode}",
        started,
        [o.result for o in outcomes if o.result is not None],
    )
    if options.rounds > 1:
        context.append(compare.recommendation(outcomes, profiles, options.rounds))
    finish(rows, out, "Allocator profiles compared", context, rows[0].label if rows else None)
    if options.rounds > 1:
        sys.stdout.write(context[-1] + "\n")
    return compare.exit_code(outcomes)


@contextlib.contextmanager
def database_for(run: compare.Run) -> Iterator[dict[str, str]]:
    """DATABASE_URL of a throwaway PostgreSQL cluster for a row that asks for one, for the length
    of that row; nothing for the others (the service's own SQLite file)."""
    if run.database is None:
        yield {}
        return
    try:
        cluster = make_cluster()
    except (OSError, RuntimeError) as exc:
        raise RunNotMade(f"{run.label}: no PostgreSQL cluster: {exc}") from None
    try:
        yield {"DATABASE_URL": cluster.create_database()}
    finally:
        cluster.destroy()


def compare_command(options: CompareOptions) -> int:
    started = datetime.now().astimezone()
    return not_made(lambda: compare_all(options, started))


RUN = flags.Command("run", RUN_SUMMARY, __doc__, add_run, RunOptions.of, check_run, run_command)
COMPARE = flags.Command(
    "compare", COMPARE_SUMMARY, __doc__, add_compare, CompareOptions.of, check_compare,
    compare_command,
)  # fmt: skip
