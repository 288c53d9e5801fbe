"""The flags the subcommands share, each defined once here: one name, one meaning everywhere.

A subcommand is a `Command`: its own flags, its checks and its run. It calls the `add_*`
functions below for the shared ones, and `check_*` for their checks, so `--max-failures` is a
share of requests in every subcommand and `--limit-mode` picks the same limits everywhere.

Each `add_*` group has its typed options beside it (`ServiceOptions`, `OutputOptions`,
`VerdictOptions`), read from argparse's Namespace once by their `of`: past that point a typo in a
flag's name is a type error, not an AttributeError in the middle of a run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from scripts.verify.core.modes import LIMIT_MODES
from scripts.verify.core.sampling import METRICS
from scripts.verify.core.verdict import Criteria

Parser = argparse.ArgumentParser


Options = TypeVar("Options")


@dataclass(frozen=True)
class Command(Generic[Options]):
    """One subcommand of `python -m scripts.verify`.

    argparse stays the parser; `parse` turns its Namespace into the command's typed options once,
    and the checks and the run take those. cli.py is then the one place a Namespace reaches a
    command, and the type checker sees every option a command reads.
    """

    name: str
    summary: str  # one line, for the list of subcommands
    doc: str  # its module's docstring: a title line, then what it does and its exit codes
    add_arguments: Callable[[Parser], None]
    parse: Callable[[argparse.Namespace], Options]  # the typed options, read once
    check: Callable[[Parser, Options], None]  # parser.error() on a bad combination
    run: Callable[[Options], int]  # the exit code


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


@dataclass(frozen=True)
class ServiceOptions:
    """add_service's flags: how the service is started here."""

    web_concurrency: int
    limit_mode: str
    settings: tuple[str, ...] = ()  # --set's NAME=VALUE items as given; check_service checks them

    @classmethod
    def of(cls, args: argparse.Namespace) -> ServiceOptions:
        return cls(args.web_concurrency, args.limit_mode, tuple(args.set))

    def overrides(self) -> dict[str, str]:
        """The --set settings as a mapping, a later NAME over an earlier one."""
        return dict(item.partition("=")[::2] for item in self.settings)


def add_output(parser: Parser, default: str, plot: bool = True) -> None:
    parser.add_argument("--out", type=Path, help=f"output folder (default {default})")
    if plot:
        parser.add_argument("--no-plot", action="store_true", help="skip memory.png (matplotlib)")
    else:
        parser.set_defaults(no_plot=True)  # nothing plotted: OutputOptions reads the same Namespace


@dataclass(frozen=True)
class OutputOptions:
    """add_output's flags: where the results go, and whether memory.png is drawn."""

    out: Path | None
    plot: bool = True

    @classmethod
    def of(cls, args: argparse.Namespace) -> OutputOptions:
        return cls(args.out, not args.no_plot)

    def folder(self, started: datetime, pattern: str) -> Path:
        """--out, else results/ and the start time in ``pattern`` (a strftime format), so two
        runs never write into one folder."""
        return self.out or Path("results") / started.strftime(pattern)


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


@dataclass(frozen=True)
class VerdictOptions:
    """add_verdict's flags: what is judged, and the recorded run judged again instead of a new
    one (None where the subcommand records nothing to judge again)."""

    limit_mb: float
    metric: str | None  # None: the subcommand's own default, decided where it runs
    max_failures: float
    from_timeline: Path | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> VerdictOptions:
        return cls(args.limit_mb, args.metric, args.max_failures, args.from_timeline)


def check_service(parser: Parser, service: ServiceOptions) -> None:
    if service.web_concurrency < 1:
        parser.error("--web-concurrency must be at least 1")
    for item in service.settings:
        name, sep, _ = item.partition("=")
        if not sep or not name or not name.isupper():
            parser.error(f"--set {item!r}: expected NAME=VALUE with an upper-case NAME")


def check_verdict(parser: Parser, verdict: VerdictOptions) -> None:
    if verdict.limit_mb <= 0:
        parser.error("--limit-mb must be positive")
    if not 0 <= verdict.max_failures <= 1:
        parser.error("--max-failures is a share of requests: between 0 and 1")


def needs_cgroup(
    parser: Parser, verdict: VerdictOptions, limit_mode: str, remote: bool = False
) -> None:
    """--metric cgroup reads a limit's working set: refuse it where no limit is made."""
    recorded = verdict.from_timeline is not None
    if verdict.metric == "cgroup" and limit_mode == "none" and not (remote or recorded):
        parser.error("--metric cgroup needs a cgroup: --limit-mode cgroup|docker, or --url")
