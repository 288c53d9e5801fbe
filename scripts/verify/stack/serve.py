"""The service as app.launch starts it, with another HTTP stack named:
`python -m scripts.verify.stack.serve HTTP LOOP`.

Same profile environment, same uvicorn command line; only ``--http`` and ``--loop`` differ, so a
difference measured between stacks is the stack's. Not a setting of the launcher: httptools has
no bound on a request head (docs/http-stack.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from app.config import load_settings
from app.launch import choose_profile, configuration_errors, uvicorn_argv


def with_stack(argv: Sequence[str], http: str, loop: str) -> list[str]:
    """``argv`` with the values of --http and --loop replaced."""
    named = list(argv)
    for flag, value in (("--http", http), ("--loop", loop)):
        named[named.index(flag) + 1] = value
    return named


def main(args: Sequence[str] | None = None) -> None:
    http, loop = args if args is not None else sys.argv[1:3]
    with configuration_errors():
        env, _ = choose_profile(os.environ).environment(os.environ)
        os.environ.update(env)  # Settings must see the profile's values, as in app.launch
        argv = with_stack(uvicorn_argv(load_settings()), http, loop)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
