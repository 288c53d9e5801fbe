"""Does the event loop answer while bulk posts run? `python -m lab.loop --setup NAME=DIR ...`

For each round, for each --setup in the order given (so A B A B), a fresh server of that
checkout; against it, for each --at-once level (8 and 16: the load and twice the load),
--posts posts of --records records to /bulk/sync from a process of their own, bodies built
before the load, while another process probes GET /healthz every --interval-ms on one
keep-alive connection (latency from each probe's due time). Judged: the last setup's /healthz
p99 at the highest level, in every round, at most --target-ms.

  exit 0  within the target   exit 1  over it, or a probe or post failed
  exit 2  the run could not be made

Writes <out>/loop.md (the table) and <out>/loop.json (the figures) and each server's log.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from lab.loop.figures import TARGET_P99_MS, Run, Setup, SetupError, schedule, table, verdict
from lab.loop.run import Load, run_setup
from scripts.verify.core.errors import EXIT_FAIL, EXIT_NOT_MADE, EXIT_PASS, RunNotMade


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--setup",
        action="append",
        required=True,
        help="NAME=DIR[,VAR=VALUE...]: a checkout and settings for it; twice or more",
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds, each setup once per round")
    p.add_argument("--at-once", default="8,16", help="posts in flight, per level (8,16)")
    p.add_argument("--posts", type=int, default=Load().posts, help="posts per level")
    p.add_argument("--records", type=int, default=Load().records, help="records per post")
    p.add_argument(
        "--interval-ms", type=float, default=Load().interval_ms, help="ms between probes"
    )
    p.add_argument(
        "--target-ms",
        type=float,
        default=TARGET_P99_MS,
        help="the judged setup's p99 at the highest level, at most",
    )
    p.add_argument("--out", type=Path, default=None, help="results/loop-<timestamp>/")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        setups = [Setup.parse(text) for text in args.setup]
        levels = tuple(int(n) for n in args.at_once.split(","))
    except (SetupError, ValueError) as exc:
        parser().error(str(exc))
    if len(setups) < 2 or len({s.name for s in setups}) != len(setups):
        parser().error("--setup twice or more, each with a name of its own")
    missing = [str(s.checkout) for s in setups if not (s.checkout / "app" / "main.py").is_file()]
    if missing or args.rounds < 1 or not levels or min(levels) < 1 or args.posts < 1:
        parser().error(
            f"checkouts without app/main.py: {missing}"
            if missing
            else "--rounds, --posts and every --at-once level must be at least 1"
        )
    started = datetime.now().astimezone()
    out: Path = args.out or Path("results") / started.strftime("loop-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    load = Load(args.posts, args.records, args.interval_ms)
    by_name = {s.name: s for s in setups}
    runs: list[Run] = []
    try:
        for round_, name in schedule([s.name for s in setups], args.rounds):
            found = run_setup(by_name[name], round_, load, levels, out)
            for r in found:
                sys.stderr.write(
                    f"round {round_} {name} {r.at_once} in flight: "
                    f"p99 {r.p99_ms:.1f} ms, {r.seconds:.2f} s\n"
                )
            runs += found
    except RunNotMade as exc:
        sys.stderr.write(f"loop: run not made: {exc}\n")
        return EXIT_NOT_MADE
    judged = setups[-1].name
    reasons = verdict(runs, judged, max(levels), args.target_ms)
    context = [
        "command: `python -m lab.loop " + " ".join(argv) + "`",
        "setups: " + ", ".join(f"{s.name} ({s.checkout}, {s.env or 'defaults'})" for s in setups),
        f"{load.posts} posts of {load.records} records to /bulk/sync per level; in flight: "
        f"{', '.join(map(str, levels))}; /healthz every {load.interval_ms:g} ms",
        f"judged: {judged}, p99 at {max(levels)} in flight at most {args.target_ms:g} ms",
        f"started {started.isoformat(timespec='seconds')}",
    ]
    text = table(runs)
    (out / "loop.md").write_text(
        "\n".join(
            [
                "# /healthz during bulk posts",
                "",
                *(f"- {c}" for c in context),
                "",
                text,
                "",
                *(f"- {r}" for r in reasons),
            ]
        )
        + "\n"
    )
    (out / "loop.json").write_text(
        json.dumps(
            {
                "context": context,
                "target_ms": args.target_ms,
                "judged": judged,
                "passed": not reasons,
                "reasons": reasons,
                "runs": [r.as_dict() for r in runs],
            },
            indent=1,
        )
        + "\n"
    )
    sys.stdout.write(text + "\n" + "".join(f"- {r}\n" for r in reasons))
    sys.stdout.write(f"{'PASS' if not reasons else 'FAIL'}; results in {out}\n")
    return EXIT_FAIL if reasons else EXIT_PASS


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
