"""Offer more load than the service can serve, inside a real memory limit:
`python -m scripts.verify overload`.

Needs root and a memory controller (--limit-mode cgroup, the only mode here). For each
profile (`baseline` and the default unless --profile names one) and each level of --levels,
starts the service as the verifier does inside a memory cgroup of --limit-mb (memory and
memory+swap), and has ``level x BULK_CONCURRENCY`` clients send large valid bodies for
--seconds: the heavy requests the workload declares (app/load.py), each with its largest body,
shared out among the clients (the reference workload's: 20,000 records, 7.7 MB, half to its sync
route and half to its async one), each client sending its whole body before reading the reply
and, refused, waiting out the 503's Retry-After (or not: --ignore-retry-after), while /healthz
is probed every 100 ms. Records every
answer, goodput (accepted per second), p50 and p99 of accepted requests, the peak working set,
OOM kills and /healthz. Judged for every profile but `baseline` (shown for contrast): no OOM
kill at any level, the peak working set under the limit less the headroom, and goodput at the
highest level at least --min-goodput-share of goodput at the lowest.

  exit 0  every judged profile met the targets
  exit 1  one did not (the reasons are listed)
  exit 2  the run could not be made (no root, no memory controller, service never healthy)

Then, for each level of --slow-readers, stores four large results (20,000 records, ~9.6 MB
replies) and hangs that many slow readers on them for --seconds (a 4 KB receive buffer, 5 bytes
a second, as a phone on a bad link or `slowhttptest -X`), /healthz probed from a process of its
own: memory per slow reader (the cgroup's growth over the readers) and the peak. Judged for every
profile but `baseline`: no OOM kill, alive, /healthz answering 99% of probes, and a normal
client reading a result whole afterwards.

Then, for each count of --slow-bodies, that many `slowhttptest -B` connections to the first
declared heavy request (the reference workload's sync route), each declaring a 7 MB body
and sending about 1 KB a second (`-i 1 -x 1200`: above the body rate floor), while a
legitimate client in a process of its own posts that request's largest body at most once a
second: the legitimate posts answered 201 out of those sent, for --seconds without the flood,
then for --seconds with it. Judged for every profile but `baseline`: no OOM kill, alive, and at
least --min-served-share of the posts under the flood answered 201. Needs Debian's
`slowhttptest`.

Then, for each body of --body-cost, one submission to a fresh server: the peak RSS growth over
it per body byte, the figure a admitted route's cost factor must cover (reported, not judged).

Writes <out>/overload.md (the tables) and <out>/overload.json, and each server's log.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.memory.budget import DEFAULT_HEADROOM_SHARE
from app.memory.measure import MB
from app.profiles import ProfileError, load_profiles
from scripts.verify import flags
from scripts.verify.core.context import command_lines, started_line
from scripts.verify.core.declared import heavy_requests, readable
from scripts.verify.core.errors import EXIT_NOT_MADE, RunNotMade, exit_for
from scripts.verify.overload.cost import BodyShape, run_cost
from scripts.verify.overload.run import OverloadRun, OverloadSettings, large_body, run_overload
from scripts.verify.overload.slowbody import SlowBodyRun, SlowBodySettings, run_slow_bodies
from scripts.verify.overload.slowread import SlowReadRun, SlowReadSettings, run_slow_readers

BASELINE = "baseline"
SERVES_AT_ONCE = 2  # BULK_CONCURRENCY's default: submissions the service processes at once
COLUMNS = (
    "profile", "offered", "clients", "201", "503", "other", "conn. errors", "goodput /s",
    "p50 s", "p99 s", "peak MB", "OOM kills", "alive", "/healthz worst s",
)
COST_COLUMNS = (
    "profile", "records", "bytes per record", "body MB", "peak RSS growth MB", "per body byte",
)
SLOW_COLUMNS = (
    "profile", "slow readers", "reply MB", "cut by the floor", "growth MB", "per reader KB",
    "kernel KB per reader", "peak MB", "OOM kills", "alive", "/healthz ok", "read whole after",
)
SLOW_BODY_COLUMNS = (
    "profile", "server", "slow bodies", "declared MB", "201 / sent, alone",
    "201 / sent, flooded", "flooded share", "peak reserved MB", "OOM kills", "alive",
)


def add_arguments(parser: flags.Parser) -> None:
    flags.add_profile(parser)
    parser.add_argument(
        "--levels",
        default="1,4,16",
        help="load offered, as multiples of what the service serves at once (default 1,4,16; "
        "none: no flood)",
    )
    parser.add_argument(
        "--slow-readers",
        default="40,300",
        help="slow readers of stored results, one run per count (default 40,300; none: no run)",
    )
    parser.add_argument(
        "--slow-bodies",
        default="none",
        help="slow-body floods (slowhttptest -B) against a legitimate client, one run per count "
        "of attacking connections (e.g. 40; default none)",
    )
    flags.add_number(
        parser, "--min-served-share", float, 0.9,
        "legitimate posts answered 201 under the slow-body flood, as a share of those sent, to "
        "pass",
    )
    parser.add_argument(
        "--body-cost",
        default="none",
        help="what one submission holds per body byte, on a fresh server per body: bodies as "
        "RECORDS or RECORDS:NOTE_CHARS, comma-separated (e.g. 20000,20000:300,3000; default none)",
    )
    flags.add_number(parser, "--seconds", float, 30.0, "seconds of load per level")
    flags.add_number(parser, "--limit-mb", float, 500.0, "the memory cgroup's limit, MB")
    flags.add_number(
        parser, "--min-goodput-share", float, 0.8,
        "goodput at the highest level, as a share of the lowest level's, to pass",
    )
    parser.add_argument(
        "--chunked", action="store_true", help="send the bodies chunked, without Content-Length"
    )
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="refused clients try again after 50 ms, as hostile ones do, instead of after the "
        "503's Retry-After",
    )
    flags.add_service(parser, limit_mode="cgroup")
    flags.add_output(parser, "results/overload-<timestamp>/", plot=False)


@dataclass(frozen=True)
class OverloadOptions:
    """The overload's options, read once from the Namespace. --levels, --slow-readers and
    --body-cost stay the text given: the check says what is wrong with it, and the summary
    quotes it."""

    service: flags.ServiceOptions
    output: flags.OutputOptions
    profile: str | None = None  # None: baseline and the default
    levels: str = "1,4,16"
    slow_readers: str = "40,300"
    slow_bodies: str = "none"
    body_cost: str = "none"
    seconds: float = 30.0
    limit_mb: float = 500.0
    min_goodput_share: float = 0.8
    min_served_share: float = 0.9
    chunked: bool = False
    ignore_retry_after: bool = False
    argv: tuple[str, ...] = ()  # empty where no command line made the run (a test)

    @classmethod
    def of(cls, args: argparse.Namespace) -> OverloadOptions:
        return cls(
            service=flags.ServiceOptions.of(args),
            output=flags.OutputOptions.of(args),
            profile=args.profile,
            levels=args.levels,
            slow_readers=args.slow_readers,
            slow_bodies=args.slow_bodies,
            body_cost=args.body_cost,
            seconds=args.seconds,
            limit_mb=args.limit_mb,
            min_goodput_share=args.min_goodput_share,
            min_served_share=args.min_served_share,
            chunked=args.chunked,
            ignore_retry_after=args.ignore_retry_after,
            argv=tuple(args.argv),
        )


def levels_of(text: str) -> list[int]:
    if text.strip() == "none":
        return []
    return [int(part) for part in text.split(",") if part.strip()]


def shapes_of(text: str) -> list[BodyShape]:
    if text.strip() == "none":
        return []
    return [BodyShape.parse(part) for part in text.split(",") if part.strip()]


def check_arguments(parser: flags.Parser, options: OverloadOptions) -> None:
    try:
        levels = levels_of(options.levels)
        readers = levels_of(options.slow_readers)
        attackers = levels_of(options.slow_bodies)
    except ValueError:
        parser.error(
            "--levels, --slow-readers and --slow-bodies are comma-separated whole numbers, or none"
        )
    try:
        shapes = shapes_of(options.body_cost)
    except ValueError:
        parser.error("--body-cost is RECORDS or RECORDS:NOTE_CHARS, comma-separated, or none")
    if not levels and not readers and not attackers and not shapes:
        parser.error(
            "--levels, --slow-readers, --slow-bodies and --body-cost are all none: nothing to run"
        )
    if min([*levels, *readers, *attackers], default=1) < 1:
        parser.error("each of --levels, --slow-readers and --slow-bodies must be at least 1")
    if options.seconds <= 0 or options.limit_mb <= 0:
        parser.error("--seconds and --limit-mb must be positive")
    if not 0 <= options.min_goodput_share <= 1 or not 0 <= options.min_served_share <= 1:
        parser.error("--min-goodput-share and --min-served-share are shares: between 0 and 1")
    flags.check_service(parser, options.service)
    if options.service.limit_mode != "cgroup":
        parser.error("overload runs in a memory cgroup made here: --limit-mode cgroup (root)")


def judge(runs: Sequence[OverloadRun], limit_mb: float, min_share: float) -> list[str]:
    """Why one profile's runs miss the targets; empty when they meet them."""
    reasons = []
    mark_mb = limit_mb * (1 - DEFAULT_HEADROOM_SHARE)
    for run in runs:
        figures = run.as_dict()
        where = f"{run.profile} at {run.settings.clients} clients"
        if run.oom_kills or not run.alive:
            reasons.append(f"{where}: {run.oom_kills} OOM kill(s), alive {run.alive}")
        if run.peak_working_set_bytes / MB >= mark_mb:
            reasons.append(
                f"{where}: peak working set {figures['peak_working_set_mb']} MB, not under "
                f"{mark_mb:g} MB (the limit less the headroom)"
            )
    lowest, highest = runs[0].flood.goodput, runs[-1].flood.goodput
    if len(runs) > 1 and highest < min_share * lowest:
        reasons.append(
            f"{runs[-1].profile}: goodput {highest:.2f}/s at the highest level is under "
            f"{min_share:g}x the {lowest:.2f}/s at the lowest"
        )
    return reasons


MIN_HEALTH_SHARE = 0.99  # of /healthz probes answered 200 while the slow readers hang on


def judge_slow(run: SlowReadRun) -> list[str]:
    where = f"{run.profile} with {run.settings.readers} slow readers"
    reasons = []
    if run.oom_kills or not run.alive:
        reasons.append(f"{where}: {run.oom_kills} OOM kill(s), alive {run.alive}")
    if run.health_share < MIN_HEALTH_SHARE:
        # One decimal: 98.7% printed as 99% read as a pass beside "not 99%".
        reasons.append(
            f"{where}: /healthz answered {run.health_share:.1%} of probes, "
            f"under {MIN_HEALTH_SHARE:.0%}"
        )
    if run.alive and not run.whole_read_after:
        reasons.append(f"{where}: a normal client could not read a result whole afterwards")
    return reasons


def judge_slow_bodies(run: SlowBodyRun, min_share: float) -> list[str]:
    where = f"{run.profile} under {run.settings.attackers} slow bodies"
    reasons = []
    if run.oom_kills or not run.alive:
        reasons.append(f"{where}: {run.oom_kills} OOM kill(s), alive {run.alive}")
    posts = run.flooded
    if posts.share < min_share:
        reasons.append(
            f"{where}: {posts.created} of {posts.sent} legitimate posts answered 201, "
            f"not {min_share:.0%}"
        )
    return reasons


def slow_body_cells(figures: Mapping[str, Any]) -> list[str]:
    """One slow-body run's row, from its figures as overload.json holds them."""
    quiet, flooded = figures["quiet"], figures["flooded"]
    reserved = figures["peak_reserved_mb"]
    return [
        str(figures["profile"]),
        str(figures["server"]),
        str(figures["attackers"]),
        f"{figures['declared_mb']:.1f}",
        f"{quiet['created']} / {quiet['sent']}",
        f"{flooded['created']} / {flooded['sent']}",
        f"{flooded['share']:.0%}",
        "-" if reserved is None else f"{reserved:.0f}",
        str(figures["oom_kills"]),
        "yes" if figures["alive"] else "no",
    ]


def slow_cells(figures: Mapping[str, Any]) -> list[str]:
    """One slow-reader run's row, from its figures as overload.json (and the published results
    file) hold them, so the table printed and the table published are the same."""
    kernel = figures["kernel_per_reader_kb"]
    return [
        str(figures["profile"]),
        str(figures["readers"]),
        f"{figures['reply_mb']:.1f}",
        "-" if figures["cut_slow"] is None else str(figures["cut_slow"]),
        f"{figures['growth_mb']:.0f}",
        f"{figures['per_reader_kb']:.0f}",
        "-" if kernel is None else f"{kernel:.0f}",
        f"{figures['peak_usage_mb']:.0f}",
        str(figures["oom_kills"]),
        "yes" if figures["alive"] else "no",
        f"{figures['health_share']:.0%}",
        "yes" if figures["whole_read_after"] else "no",
    ]


def cost_cells(figures: Mapping[str, Any]) -> list[str]:
    """One submission's row, from its figures as overload.json holds them."""
    return [
        str(figures["profile"]),
        f"{figures['records']:,}",
        str(figures["record_bytes"]),
        f"{figures['body_mb']:.2f}",
        f"{figures['growth_mb']:.1f}",
        f"{figures['per_body_byte']:.1f}x",
    ]


def flood_cells(figures: Mapping[str, Any]) -> list[str]:
    """One flood level's row, from its figures as overload.json (and the published results
    file) hold them."""
    statuses = {int(status): n for status, n in figures["statuses"].items()}
    other = sum(n for status, n in statuses.items() if status not in (201, 503))
    return [
        str(figures["profile"]),
        f"{figures['level']}x",
        str(figures["clients"]),
        str(statuses.get(201, 0)),
        str(statuses.get(503, 0)),
        str(other),
        str(sum(figures["connection_errors"].values())),
        f"{figures['goodput_per_s']:.2f}",
        _seconds(figures["accepted_p50_s"]),
        _seconds(figures["accepted_p99_s"]),
        f"{figures['peak_working_set_mb']:.0f}",
        str(figures["oom_kills"]),
        "yes" if figures["alive"] else "no",
        f"{figures['health_worst_s']:.2f}",
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def run(options: OverloadOptions) -> int:
    started = datetime.now().astimezone()
    out = options.output.folder(started, "overload-%Y%m%d-%H%M%S")
    try:
        profiles = load_profiles()
        profile = options.profile
        names = [profiles.get(profile).name] if profile else [BASELINE, profiles.default]
        heavy = heavy_requests()  # nothing declared to flood: one line, before any server
        if levels_of(options.slow_readers):
            readable()
        body = large_body()  # built once, before any server runs
    except (ProfileError, RunNotMade) as exc:
        sys.stderr.write(f"overload: run not made: {exc}\n")
        return EXIT_NOT_MADE
    overrides = options.service.overrides()
    at_once = int(overrides.get("BULK_CONCURRENCY", SERVES_AT_ONCE))
    rows: list[list[str]] = []
    reasons: list[str] = []
    figures: list[dict[str, object]] = []
    for name in names:
        runs = []
        for level in levels_of(options.levels):
            settings = OverloadSettings(
                clients=level * at_once, seconds=options.seconds, limit_mb=options.limit_mb,
                chunked=options.chunked, honour_retry_after=not options.ignore_retry_after,
                web_concurrency=options.service.web_concurrency,
                overrides=overrides,
            )
            sys.stderr.write(f"overload: {name} at {level}x ({settings.clients} clients)\n")
            try:
                result = run_overload(name, settings, out / name)
            except RunNotMade as exc:
                sys.stderr.write(f"overload: run not made: {exc}\n")
                return EXIT_NOT_MADE
            runs.append(result)
            figures.append({**result.as_dict(), "level": level, "kind": "flood"})
            rows.append(flood_cells(figures[-1]))
        if name != BASELINE and runs:
            reasons += judge(runs, options.limit_mb, options.min_goodput_share)
    slow_rows: list[list[str]] = []
    for name in names:
        for count in levels_of(options.slow_readers):
            sys.stderr.write(f"overload: {name} with {count} slow readers\n")
            settings_slow = SlowReadSettings(
                readers=count, seconds=options.seconds, limit_mb=options.limit_mb,
                web_concurrency=options.service.web_concurrency, overrides=overrides,
            )
            try:
                slow = run_slow_readers(name, settings_slow, body, out / name)
            except RunNotMade as exc:
                sys.stderr.write(f"overload: run not made: {exc}\n")
                return EXIT_NOT_MADE
            figures.append({**slow.as_dict(), "kind": "slow_readers"})
            slow_rows.append(slow_cells(figures[-1]))
            if name != BASELINE:
                reasons += judge_slow(slow)
    body_rows: list[list[str]] = []
    for name in names:
        for count in levels_of(options.slow_bodies):
            sys.stderr.write(f"overload: {name} with {count} slow bodies\n")
            settings_body = SlowBodySettings(
                attackers=count, seconds=options.seconds, limit_mb=options.limit_mb,
                web_concurrency=options.service.web_concurrency, overrides=overrides,
            )
            try:
                slow_body = run_slow_bodies(name, settings_body, body, out / name)
            except RunNotMade as exc:
                sys.stderr.write(f"overload: run not made: {exc}\n")
                return EXIT_NOT_MADE
            figures.append({**slow_body.as_dict(), "kind": "slow_bodies"})
            body_rows.append(slow_body_cells(figures[-1]))
            if name != BASELINE:
                reasons += judge_slow_bodies(slow_body, options.min_served_share)
    cost_rows: list[list[str]] = []
    for name in names:
        for shape in shapes_of(options.body_cost):
            sys.stderr.write(f"overload: {name}, one submission of {shape.records} records\n")
            try:
                cost = run_cost(name, shape, options.limit_mb, overrides, out / name)
            except RunNotMade as exc:
                sys.stderr.write(f"overload: run not made: {exc}\n")
                return EXIT_NOT_MADE
            figures.append({**cost.as_dict(), "kind": "cost"})
            cost_rows.append(cost_cells(figures[-1]))
    context = [
        *command_lines(options.argv),
        f"bodies of {len(body) / 2**20:.1f} MB ({heavy[0].largest.records:,} records), "
        f"{'chunked' if options.chunked else 'with Content-Length'}; refused clients retry "
        f"{'after 50 ms' if options.ignore_retry_after else 'after Retry-After'}; "
        f"{options.seconds:g} s per level; "
        f"a {options.limit_mb:g} MB memory cgroup; {at_once} served at once; slow readers: "
        f"{options.slow_readers}, 5 bytes a second on a 4 KB receive buffer; slow bodies: "
        f"{options.slow_bodies}, slowhttptest -B -i 1 -x 1200 declaring 7,000,000 bytes; "
        "body cost: "
        f"{options.body_cost}, one submission to {heavy[0].path} of a fresh server each",
        started_line(started),
    ]
    table = render(rows) if rows else ""
    if slow_rows:
        table = "\n\n".join(t for t in (table, render(slow_rows, SLOW_COLUMNS)) if t)
    if body_rows:
        table = "\n\n".join(t for t in (table, render(body_rows, SLOW_BODY_COLUMNS)) if t)
    if cost_rows:
        table = "\n\n".join(t for t in (table, render(cost_rows, COST_COLUMNS)) if t)
    out.mkdir(parents=True, exist_ok=True)
    document = ["# Overload", "", *(f"- {c}" for c in context), "", table]
    document += ["", *(f"- {r}" for r in reasons)] if reasons else ["", "- targets met"]
    (out / "overload.md").write_text("\n".join(document) + "\n")
    (out / "overload.json").write_text(
        json.dumps({"context": context, "runs": figures, "reasons": reasons}, indent=1) + "\n"
    )
    sys.stdout.write(table + "\n")
    sys.stdout.writelines(r + "\n" for r in reasons)
    sys.stdout.write(f"results in {out}\n")
    return exit_for(not reasons)


SUMMARY = "more load than the service can serve, inside a real limit: shed, never OOM-killed"
COMMAND = flags.Command(
    "overload", SUMMARY, __doc__, add_arguments, OverloadOptions.of, check_arguments, run
)
