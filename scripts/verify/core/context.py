"""The lines a run's summary opens with: the command that made it, and when and where it started.
Every command's summary (run, compare, soak, overload) says these the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

PROGRAM = "python -m scripts.verify"


def command_lines(argv: Sequence[str] | None) -> list[str]:
    """The command as the user typed it, one line; none where no command line made the run (a
    test that builds its options by hand)."""
    if not argv:
        return []
    return ["command: `" + " ".join([PROGRAM, *argv]) + "`"]


def started_line(started: datetime) -> str:
    """When the run started and on how many CPUs."""
    return f"started {started.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs"
