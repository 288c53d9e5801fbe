"""`python -m lab.stack`: see lab/stack/command.py and lab/stack/README.md."""

from lab.stack.command import COMMAND
from scripts.verify.cli import standalone

raise SystemExit(standalone(COMMAND, "python -m lab.stack"))
