"""Why a verification could not be made at all (exit 2), as opposed to a failed verdict (exit 1).

The exit codes live here, once, for every subcommand."""

from __future__ import annotations

EXIT_PASS, EXIT_FAIL, EXIT_NOT_MADE = 0, 1, 2


class RunNotMade(RuntimeError):
    """The run could not be made or measured; the message is the operator's one-line reason."""


def exit_for(passed: bool) -> int:
    """The exit code of a verdict that was made."""
    return EXIT_PASS if passed else EXIT_FAIL
