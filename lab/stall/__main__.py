"""`python -m lab.stall`: see lab/stall/command.py and lab/stall/README.md."""

from lab.stall.command import COMMAND
from scripts.verify.cli import standalone

raise SystemExit(standalone(COMMAND, "python -m lab.stall"))
