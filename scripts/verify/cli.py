"""Prove a service gives memory back: `python -m scripts.verify COMMAND ...`.

One parser for every tool. Each subcommand is a `flags.Command` in its own module; the flags
they share are defined once in flags.py. A new subcommand is one module with a `Command` and one
line in COMMANDS below.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from scripts.verify import flags, publish, spike
from scripts.verify.flags import Options
from scripts.verify.overload import command as overload
from scripts.verify.soak import command as soak

# The user's tools. The instruments that decided this service's own design (lab.stall,
# lab.stack) run the same way through `standalone`, apart from these.
COMMANDS: tuple[flags.Command[Any], ...] = (
    spike.RUN, spike.COMPARE, soak.COMMAND, overload.COMMAND, publish.COMMAND
)

EPILOG = "Exit codes: 0 pass, 1 fail (with the numbers), 2 run not made (with the reason)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.verify",
        description="Prove a service gives idle memory back: spike it, let it idle, judge.",
        epilog=EPILOG,
    )
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subcommands.add_parser(
            command.name,
            help=command.summary,
            description=command.doc.split("\n\n", 1)[-1],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(command=command, parser=sub)
    return parser


def start(args: argparse.Namespace, argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format=f"%(levelname)s [{args.command.name}] %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    args.argv = argv  # read into the options: a summary opens with the command that made it
    return launch(args.command, args.parser, args)


def launch(command: flags.Command[Options], parser: flags.Parser, args: argparse.Namespace) -> int:
    """The command's typed options from argparse's Namespace, checked, then run: the one place
    a Namespace crosses into a command, and the options' type ties its parse, check and run."""
    options = command.parse(args)
    command.check(parser, options)
    return int(command.run(options))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return start(build_parser().parse_args(argv), argv)


def standalone_parser(command: flags.Command[Any], prog: str) -> argparse.ArgumentParser:
    """The parser of one command run as a program of its own, its help as a subcommand's."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=command.doc.split("\n\n", 1)[-1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_arguments(parser)
    parser.set_defaults(command=command, parser=parser)
    return parser


def standalone(command: flags.Command[Any], prog: str, argv: Sequence[str] | None = None) -> int:
    """One command as a program of its own (`python -m lab.stall`): the same flags, checks,
    logging and exit codes as a subcommand of `python -m scripts.verify`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return start(standalone_parser(command, prog).parse_args(argv), argv)
