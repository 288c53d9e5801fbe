"""The service as app.launch starts it, with another HTTP stack named:
`python -m lab.stack.serve HTTP LOOP`.

The launcher's own steps (profile, settings checked, exec); only ``--http`` and ``--loop``
differ, so a difference measured between stacks is the stack's. Not a setting of the launcher:
httptools has no bound on a request head (lab/stack/README.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

from app.launch import launch


def with_stack(argv: Sequence[str], http: str, loop: str) -> list[str]:
    """``argv`` with the values of --http and --loop replaced."""
    named = list(argv)
    for flag, value in (("--http", http), ("--loop", loop)):
        named[named.index(flag) + 1] = value
    return named


def main(args: Sequence[str] | None = None) -> None:
    http, loop = args if args is not None else sys.argv[1:3]
    launch(partial(with_stack, http=http, loop=loop))


if __name__ == "__main__":
    main()
