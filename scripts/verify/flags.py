"""The flags the subcommands share, each defined once here: one name, one meaning everywhere.

A subcommand is a `Command`: its own flags, its checks and its run. It calls the `add_*`
functions below for the shared ones, and `check_*` for their checks, so `--max-failures` is a
share of requests in every subcommand and `--limit-mode` picks the same limits everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.verify.core.modes import LIMIT_MODES
from scripts.verify.core.sampling import METRICS
from scripts.verify.core.verdict import Criteria

Parser = argparse.ArgumentParser


@dataclass(frozen=True)
class Command:
    """One subcommand of `python -m scripts.verify`."""

    name: str
    summary: str  # one line, for the list of subcommands
    doc: str  # its module's docstring: a title line, then what it does and its exit codes
    add_arguments: Callable[[Parser], None]
    check: Callable[[Parser, argparse.Namespace], None]  # parser.error() on a bad combination
    run: Callable[[argparse.Namespace], int]  # the exit code


def add_number(parser: Parser, flag: str, kind: type, default: float, text: str) -> None:
    """A number flag whose help ends with its default."""
    parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default:g})")


def add_profile(parser: Parser) -> None:
    parser.add_argument(
        "--profile", help="allocator profile (profiles/profiles.toml; default: its default)"
    )


def add_service(parser: Parser, limit_mode: str) -> None:
    """How the service is started here: workers, memory limit, settings."""
    add_number(
        parser, "--web-concurrency", int, 1, "uvicorn workers (WEB_CONCURRENCY), all sampled"
    )
    parser.add_argument(
        "--limit-mode",
        choices=LIMIT_MODES,
        default=limit_mode,
        help="run the service inside a real memory limit of --limit-mb: cgroup, a memory "
        "cgroup made here (root); docker, the image under docker --memory; none, no limit "
        f"(default {limit_mode})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting over the preset's (repeatable), "
        "e.g. --set MEMORY_CLEANUP_THRESHOLD_MB=50",
    )


def add_output(parser: Parser, default: str, plot: bool = True) -> None:
    parser.add_argument("--out", type=Path, help=f"output folder (default {default})")
    if plot:
        parser.add_argument("--no-plot", action="store_true", help="skip memory.png (matplotlib)")


def add_verdict(
    parser: Parser, metric: str | None, metric_help: str, max_failures: float, recorded: bool = True
) -> None:
    """What is judged: the limit, the memory figure, the failures allowed; a recorded run."""
    defaults = Criteria()
    add_number(
        parser, "--limit-mb", float, defaults.limit_mb, "idle memory must be under this, in MB"
    )
    parser.add_argument("--metric", choices=METRICS, default=metric, help=metric_help)
    parser.add_argument(
        "--max-failures",
        type=float,
        default=max_failures,
        metavar="SHARE",
        help=f"share of requests allowed to fail, 0 to 1 (default {max_failures:g})",
    )
    if not recorded:
        parser.set_defaults(from_timeline=None)
        return
    parser.add_argument(
        "--from-timeline",
        type=Path,
        metavar="TIMELINE_JSON",
        help="judge a recorded timeline.json again with these criteria; no load",
    )


def check_service(parser: Parser, args: argparse.Namespace) -> None:
    if args.web_concurrency < 1:
        parser.error("--web-concurrency must be at least 1")
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name or not name.isupper():
            parser.error(f"--set {item!r}: expected NAME=VALUE with an upper-case NAME")


def check_verdict(parser: Parser, args: argparse.Namespace) -> None:
    if args.limit_mb <= 0:
        parser.error("--limit-mb must be positive")
    if not 0 <= args.max_failures <= 1:
        parser.error("--max-failures is a share of requests: between 0 and 1")


def needs_cgroup(parser: Parser, args: argparse.Namespace, remote: bool = False) -> None:
    """--metric cgroup reads a limit's working set: refuse it where no limit is made."""
    if args.metric == "cgroup" and args.limit_mode == "none" and not (remote or args.from_timeline):
        parser.error("--metric cgroup needs a cgroup: --limit-mode cgroup|docker, or --url")


def overrides_of(args: argparse.Namespace) -> dict[str, str]:
    """The --set settings as a mapping."""
    return dict(item.partition("=")[::2] for item in args.set)
