"""The lines a run's summary opens with: the command that made it, and when and where it started.
Every command's summary (run, compare, soak, overload) says these the same way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

PROGRAM = "python -m scripts.verify"
REPO = Path(__file__).resolve().parents[3]


def command_lines(argv: Sequence[str] | None) -> list[str]:
    """The command as the user typed it, one line; none where no command line made the run (a
    test that builds its options by hand)."""
    if not argv:
        return []
    return ["command: `" + " ".join([PROGRAM, *argv]) + "`"]


def shown_path(path: Path) -> str:
    """A file as a reader of the summary would name it: relative to the repository when it is
    inside it, so a published summary holds no path of the machine that made it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def started_line(started: datetime) -> str:
    """When the run started and on how many CPUs."""
    return f"started {started.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs"
