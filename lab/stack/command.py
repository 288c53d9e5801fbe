"""Compare uvicorn's HTTP stacks on this service, interleaved: `python -m lab.stack`.

For each workload of --workloads, for each of --rounds rounds, for each stack of --stacks, a
fresh server (glibc as shipped, access log off, one worker, a free port, a temporary database),
started as app.launch starts it but with the stack's --http and --loop; so the runs go A B A B
and drift over the batch falls on every stack alike. Stacks: h11-asyncio (the shipped edge
h11 protocol on asyncio), httptools-uvloop (what uvicorn[standard] gives), h11-uvloop.

  light  --connections keep-alive connections for --seconds, each sending GET /healthz and
         GET /products/{sku} (a known SKU) in turn: req/s, p50, p99, errors
  bulk   --bulk-posts posts of --bulk-records records, --bulk-at-once in flight, half to
         /bulk/sync and half to /bulk/async: seconds to serve all, req/s, p99 per post, errors

Both: RSS of the server's process tree before the load and its peak, sampled every 0.1 s. Then a
line per workload and stack: the mean of that stack over the mean of the first stack, for req/s,
p99 and peak RSS. No verdict: it informs a choice. The client runs on the same machine and takes
CPU from the server: compare figures within one batch only.

  exit 0  the comparison was made
  exit 2  it could not be (a stack's modules not installed, a server never healthy)

Writes <out>/stack.md (the table and the ratios) and <out>/stack.json, and each server's log.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import fmean

from lab.stack.bulk import bodies
from lab.stack.run import DEFAULT_SIZES, Workloads, run_slot
from lab.stack.stacks import DEFAULT_STACKS, STACKS, WORKLOADS, schedule
from scripts.verify import flags
from scripts.verify.core.errors import EXIT_NOT_MADE, EXIT_PASS, RunNotMade

Figures = Mapping[str, object]
COLUMNS = (
    "workload", "round", "stack", "seconds", "requests", "req/s", "p50 ms", "p99 ms", "errors",
    "RSS start MB", "RSS peak MB",
)
KEYS = (
    "workload", "round", "stack", "seconds", "requests", "req_per_s", "p50_ms", "p99_ms",
    "errors", "rss_start_mb", "rss_peak_mb",
)
RATIOS = (("req/s", "req_per_s"), ("p99", "p99_ms"), ("peak RSS", "rss_peak_mb"))


def names_of(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: flags.Parser) -> None:
    parser.add_argument(
        "--stacks",
        default=DEFAULT_STACKS,
        help=f"stacks to compare, the first the reference ({', '.join(STACKS)}; "
        f"default {DEFAULT_STACKS})",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"workloads to run ({', '.join(WORKLOADS)}; default {','.join(WORKLOADS)})",
    )
    defaults = DEFAULT_SIZES
    flags.add_number(parser, "--rounds", int, 2, "runs of each stack per workload, interleaved")
    flags.add_number(parser, "--connections", int, defaults.connections, "light: connections")
    flags.add_number(parser, "--seconds", float, defaults.seconds, "light: seconds of load")
    flags.add_number(parser, "--bulk-posts", int, defaults.bulk_posts, "bulk: posts in all")
    flags.add_number(
        parser, "--bulk-records", int, defaults.bulk_records, "bulk: records per post"
    )
    flags.add_number(parser, "--bulk-at-once", int, defaults.bulk_at_once, "bulk: posts in flight")
    flags.add_output(parser, "results/stack-<timestamp>/", plot=False)


@dataclass(frozen=True)
class StackOptions:
    """The comparison's options, read once from the Namespace: the stacks (the first the
    reference) and workloads named, the rounds, and the workloads' sizes as run_slot takes them."""

    stacks: tuple[str, ...]
    workloads: tuple[str, ...]
    output: flags.OutputOptions
    rounds: int = 2
    sizes: Workloads = DEFAULT_SIZES
    argv: tuple[str, ...] = ()  # empty where no command line made the run (a test)

    @classmethod
    def of(cls, args: argparse.Namespace) -> StackOptions:
        sizes = Workloads(
            args.connections, args.seconds, args.bulk_posts, args.bulk_records, args.bulk_at_once
        )
        return cls(
            stacks=tuple(names_of(args.stacks)),
            workloads=tuple(names_of(args.workloads)),
            output=flags.OutputOptions.of(args),
            rounds=args.rounds,
            sizes=sizes,
            argv=tuple(args.argv),
        )


def check_arguments(parser: flags.Parser, options: StackOptions) -> None:
    stacks, workloads, sizes = options.stacks, options.workloads, options.sizes
    unknown = [s for s in stacks if s not in STACKS] + [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown stack or workload: {', '.join(unknown)}")
    if len(stacks) < 2 or len(set(stacks)) != len(stacks):
        parser.error("--stacks names at least two different stacks, e.g. " + DEFAULT_STACKS)
    if not workloads:
        parser.error("--workloads names at least one of " + ", ".join(WORKLOADS))
    counts = (options.rounds, sizes.connections, sizes.bulk_posts, sizes.bulk_records,
              sizes.bulk_at_once)  # fmt: skip
    if min(counts) < 1 or sizes.seconds <= 0:
        parser.error("--rounds, --connections, --seconds and the --bulk-* sizes must be positive")


def row(figures: Figures) -> list[str]:
    return ["-" if figures[key] is None else _cell(figures[key]) for key in KEYS]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(runs: Sequence[Figures]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    return "\n".join([*lines, *("| " + " | ".join(row(r)) + " |" for r in runs)])


def _mean(runs: Sequence[Figures], key: str) -> float | None:
    values = [float(value) for r in runs if isinstance(value := r[key], (int, float))]
    return fmean(values) if values else None


def ratios(runs: Sequence[Figures], stacks: Sequence[str]) -> list[str]:
    """Per workload and per stack after the first: its mean over the first stack's mean."""
    lines = []
    for workload in dict.fromkeys(str(r["workload"]) for r in runs):
        of = {s: [r for r in runs if r["workload"] == workload and r["stack"] == s] for s in stacks}
        reference = stacks[0]
        for other in stacks[1:]:
            parts = []
            for label, key in RATIOS:
                a, b = _mean(of[reference], key), _mean(of[other], key)
                parts.append(f"{label} {b / a:.2f}x" if a and b is not None else f"{label} -")
            lines.append(
                f"{workload}: {other} / {reference}, means of {len(of[other])} and "
                f"{len(of[reference])}: {', '.join(parts)}"
            )
    return lines


def write_results(
    out: Path, context: list[str], table: str, runs: list[dict[str, object]], summary: list[str]
) -> None:
    """stack.md: the context, the table and the ratios; stack.json: the same as figures."""
    lines = ["# HTTP stacks", "", *(f"- {c}" for c in context), "", table, ""]
    lines += [f"- {line}" for line in summary]
    (out / "stack.md").write_text("\n".join(lines) + "\n")
    text = json.dumps({"context": context, "runs": runs, "ratios": summary}, indent=1)
    (out / "stack.json").write_text(text + "\n")


def run(options: StackOptions) -> int:
    started = datetime.now().astimezone()
    out = options.output.folder(started, "stack-%Y%m%d-%H%M%S")
    stacks, workloads, sizes = options.stacks, options.workloads, options.sizes
    figures: list[dict[str, object]] = []
    if "bulk" in workloads:
        bodies(sizes.bulk_records)  # built once, before any server runs
    try:
        for stack in stacks:
            STACKS[stack].check_installed()
        for slot in schedule(workloads, options.rounds, stacks):
            sys.stderr.write(f"stack: {slot.workload} round {slot.round}, {slot.stack}\n")
            figures.append(run_slot(slot, sizes, out).as_dict())
    except RunNotMade as exc:
        sys.stderr.write(f"stack: run not made: {exc}\n")
        return EXIT_NOT_MADE
    context = [
        f"started {started.isoformat(timespec='seconds')}; one worker, MEMORY_PROFILE=glibc, "
        "access log off, client on the same machine",
        f"light: {sizes.connections} keep-alive connections for {sizes.seconds:g} s, "
        "GET /healthz and GET /products/{sku} in turn",
        f"bulk: {sizes.bulk_posts} posts of {sizes.bulk_records} records, "
        f"{sizes.bulk_at_once} at a time, half /bulk/sync half /bulk/async",
        "command: python -m lab.stack " + " ".join(options.argv),
    ]
    table, summary = render(figures), ratios(figures, stacks)
    write_results(out, context, table, figures, summary)
    sys.stdout.write("\n".join([table, *summary, f"results in {out}"]) + "\n")
    return EXIT_PASS


SUMMARY = "uvicorn's HTTP stacks compared, interleaved, on light requests and the bulk spike"
COMMAND = flags.Command(
    "stack", SUMMARY, __doc__, add_arguments, StackOptions.of, check_arguments, run
)
