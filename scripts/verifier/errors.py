"""Why a verification could not be made at all (exit 2), as opposed to a failed verdict (exit 1)."""

from __future__ import annotations


class RunNotMade(RuntimeError):
    """The run could not be made or measured; the message is the operator's one-line reason."""
