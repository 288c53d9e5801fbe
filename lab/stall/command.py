"""Show that a release never stalls the event loop: `python -m lab.stall`.

Starts the service as the verifier does (`python -m app.launch`, loopback, free port), grows its
heap with concurrent bulk posts, then probes /healthz every 10 ms on a keep-alive connection:
with no release, and with releases running back to back through the admin endpoint (a worker
thread, as the cleanup loop runs them; one starting at most every 50 ms), in blocks A B B A,
the heap grown again before each block. For contrast it measures the seed guide's way too, a
release run on the event loop, in a harness process (the same app plus one route). Judged: the
p99 with releases minus the p99 without, in ms.

  exit 0  within --target-ms for every profile run
  exit 1  over it, or /healthz failed to answer while releases ran
  exit 2  the run could not be made (service never healthy, no release completed, ...)

Writes <out>/stall.md (the table) and <out>/stall.json (the figures), and each profile's
server log under <out>/<profile>/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from app.profiles import ProfileError, load_profiles
from lab.stall import figures as sf
from lab.stall.run import StallSettings, run_profile
from scripts.verify import flags
from scripts.verify.core.errors import EXIT_FAIL, EXIT_NOT_MADE, EXIT_PASS, RunNotMade
from scripts.verify.core.progress import Progress


def add_arguments(parser: flags.Parser) -> None:
    defaults = StallSettings()
    flags.add_profile(parser)
    parser.add_argument(
        "--compare", action="store_true", help="every deployable profile in turn, one table"
    )
    number = partial(flags.add_number, parser)
    number("--probes", int, defaults.probes, "/healthz probes per condition")
    number("--interval-ms", float, defaults.interval_s * 1000, "ms between probes")
    number("--target-ms", float, sf.TARGET_MS, "allowed rise of the p99 with releases running")
    number(
        "--release-every-ms",
        float,
        defaults.release_every_s * 1000,
        "releases run back to back, one starting at most this often (0: no cap)",
    )
    number("--grow-posts", int, defaults.grow_posts, "bulk posts that grow the heap each time")
    number("--grow-records", int, defaults.grow_records, "records per bulk post")
    parser.add_argument(
        "--no-inline",
        action="store_true",
        help="skip the contrast: the seed's release on the event loop, in a harness process",
    )
    flags.add_output(parser, "results/stall-<timestamp>/", plot=False)


@dataclass(frozen=True)
class StallOptions:
    """The benchmark's options, read once from the Namespace, in the flags' own units (ms) so
    the check names what the user typed; settings() gives the run's StallSettings."""

    output: flags.OutputOptions
    profile: str | None = None
    compare: bool = False
    probes: int = StallSettings().probes
    interval_ms: float = StallSettings().interval_s * 1000
    target_ms: float = sf.TARGET_MS
    release_every_ms: float = StallSettings().release_every_s * 1000
    grow_posts: int = StallSettings().grow_posts
    grow_records: int = StallSettings().grow_records
    inline: bool = True  # --no-inline: False
    argv: tuple[str, ...] = ()  # empty where no command line made the run (a test)

    @classmethod
    def of(cls, args: argparse.Namespace) -> StallOptions:
        return cls(
            output=flags.OutputOptions.of(args),
            profile=args.profile,
            compare=args.compare,
            probes=args.probes,
            interval_ms=args.interval_ms,
            target_ms=args.target_ms,
            release_every_ms=args.release_every_ms,
            grow_posts=args.grow_posts,
            grow_records=args.grow_records,
            inline=not args.no_inline,
            argv=tuple(args.argv),
        )

    def settings(self) -> StallSettings:
        return StallSettings(
            probes=self.probes,
            interval_s=self.interval_ms / 1000,
            grow_posts=self.grow_posts,
            grow_records=self.grow_records,
            release_every_s=self.release_every_ms / 1000,
            inline=self.inline,
        )


def check_arguments(parser: flags.Parser, options: StallOptions) -> None:
    if options.compare and options.profile:
        parser.error("--compare runs every deployable profile; drop --profile")
    if options.probes < sf.MIN_PROBES:
        parser.error(f"--probes must be at least {sf.MIN_PROBES} for a p99 to mean anything")
    if options.interval_ms <= 0 or options.target_ms <= 0:
        parser.error("--interval-ms and --target-ms must be positive")
    if options.release_every_ms < 0:
        parser.error("--release-every-ms cannot be negative")
    if options.grow_posts < 1 or options.grow_records < 1:
        parser.error("--grow-posts and --grow-records must be at least 1")


def exit_code(verdicts: Sequence[sf.StallVerdict | None]) -> int:
    """2 if any profile was not made (None), else 1 if any failed, else 0."""
    if not verdicts or any(v is None for v in verdicts):
        return EXIT_NOT_MADE
    return EXIT_PASS if all(v is not None and v.passed for v in verdicts) else EXIT_FAIL


def context_lines(options: StallOptions, settings: StallSettings, started: datetime) -> list[str]:
    return [
        "command: `" + " ".join(["python -m lab.stall", *options.argv]) + "`",
        f"{settings.probes} /healthz probes per condition, one every "
        f"{settings.interval_s * 1000:g} ms, latency counted from each probe's due time",
        f"blocks A B B A (A: {sf.QUIET}, B: {sf.OFF_LOOP}, one starting at most every "
        f"{settings.release_every_s * 1000:g} ms), the heap grown before each block by "
        f"{settings.grow_posts} bulk posts of {settings.grow_records} records, "
        f"{settings.grow_concurrency} at a time",
        f"target: p99 with releases off the loop within {options.target_ms:g} ms of p99 with "
        "none",
        f"contrast ({sf.ON_LOOP}): "
        + (
            "the inline-release harness, its own process, one block"
            if settings.inline
            else "not run (--no-inline)"
        ),
        f"started {started.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs",
    ]


def run(options: StallOptions) -> int:
    settings = options.settings()
    started = datetime.now().astimezone()
    out = options.output.folder(started, "stall-%Y%m%d-%H%M%S")
    try:
        profiles = load_profiles()
        if options.compare:
            names = [p.name for p in profiles.profiles.values() if p.deploy]
        else:
            names = [profiles.get(options.profile).name]
    except ProfileError as exc:
        sys.stderr.write(f"stall: run not made: {exc}\n")
        return EXIT_NOT_MADE
    rows: list[list[str]] = []
    reasons: list[str] = []
    verdicts: list[sf.StallVerdict | None] = []
    figures: list[dict[str, object]] = []
    for name in names:
        progress = Progress(name, 0)
        try:
            result = run_profile(name, settings, out / name, progress)
            verdict: sf.StallVerdict | None = sf.judge(result, options.target_ms)
        except (RunNotMade, sf.NotJudgeable) as exc:
            rows.append(sf.not_made_row(name, str(exc)))
            reasons.append(f"{name}: not made: {exc}")
            verdicts.append(None)
            continue
        except KeyboardInterrupt:
            sys.stderr.write("stall: run not made: interrupted\n")
            return EXIT_NOT_MADE
        assert verdict is not None
        rows.extend(sf.table_cells(result, verdict))
        reasons.extend(f"{name}: {reason}" for reason in verdict.reasons)
        verdicts.append(verdict)
        figures.append({**result.as_dict(), "passed": verdict.passed, "reasons": verdict.reasons})
    table = sf.render_markdown(rows)
    context = context_lines(options, settings, started)
    out.mkdir(parents=True, exist_ok=True)
    document = ["# Event-loop stall during releases", "", *(f"- {c}" for c in context), "", table]
    if reasons:
        document += ["", *(f"- {r}" for r in reasons)]
    (out / "stall.md").write_text("\n".join(document) + "\n")
    (out / "stall.json").write_text(
        json.dumps({"context": context, "target_ms": options.target_ms, "runs": figures}, indent=1)
        + "\n"
    )
    sys.stdout.write(table + "\n")
    sys.stdout.writelines(r + "\n" for r in reasons)
    sys.stdout.write(f"results in {out}\n")
    return exit_code(verdicts)


SUMMARY = "/healthz latency while releases run, against none: a release never stalls the loop"
COMMAND = flags.Command(
    "stall", SUMMARY, __doc__, add_arguments, StallOptions.of, check_arguments, run
)
