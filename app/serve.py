"""uvicorn's own command line, with a worker that could not start reported as a failure:
`python -m app.serve ARGS` does what `python -m uvicorn ARGS` does, and the launcher execs it.

With `--workers N`, uvicorn's supervisor stops when a worker exits before it served (status 3,
uvicorn's STARTUP_FAILURE: the app's startup raised, say), then returns normally, and the
process exits 0 (uvicorn 0.54 and 0.55; with one worker it exits 3). A restart policy that
restarts on failure (Docker's `on-failure`, Railway's `ON_FAILURE`) reads 0 as a clean stop and
leaves the service down. Here the supervisor remembers why it stopped, and the exit status says
so. tests/app/test_serve.py shows uvicorn's own behaviour beside this one, so an uvicorn that
fixes it is noticed and this module can go.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("uvicorn.error")
# The module, not the package's `uvicorn.main`, which is the function of that name.
cli: Any = importlib.import_module("uvicorn.main")


class ReportingMultiprocess(Multiprocess):
    """uvicorn's supervisor, remembering whether it stopped because a worker could not start."""

    worker_failed_to_start = False  # one supervisor per process

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        if self.should_exit.is_set() and any(
            process.exitcode == STARTUP_FAILURE for process in self.processes
        ):
            ReportingMultiprocess.worker_failed_to_start = True


def exit_status(status: object, worker_failed_to_start: bool) -> object:
    """The status to exit with: uvicorn's own, unless it says success after a failed start."""
    if status in (0, None) and worker_failed_to_start:
        return STARTUP_FAILURE
    return status


def main() -> None:
    cli.Multiprocess = ReportingMultiprocess  # the name uvicorn's run() looks up
    try:
        cli.main()
    except SystemExit as done:  # click ends every run with one, success included
        status = exit_status(done.code, ReportingMultiprocess.worker_failed_to_start)
        if status != done.code:
            log.error("A worker failed to start: exiting with status %s", status)
        raise SystemExit(status) from None


if __name__ == "__main__":
    main()
