"""The load this checkout's workloads declare (app/load.py), as the verifier reads it: through
the frame's one list of them, ``app.main.workloads()``, never by importing a workload. So the
verifier drives whatever the checkout mounts: the reference workload's users and floods as it
stands, a fork's own once its workload declares them, and where nothing is declared it stops
with one line saying what to pass, before any server is started.

`python -m scripts.verify.core.declared` prints the Locust files of the declared users with the
spike shape beside them, as `locust -f` takes them (what `make load` runs), or that one line on
stderr and exit 2.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from app.load import HeavyRequest, LoadDeclarationError, LocustUsers, WorkloadLoad, declared_load
from app.main import workloads
from scripts.verify.core.errors import EXIT_NOT_MADE, RunNotMade

REPO_ROOT = Path(__file__).resolve().parents[3]
SHAPE_FILE = REPO_ROOT / "loadtest" / "shape.py"
NO_USERS = (
    "no workload in app.main.workloads() declares its Locust users (app/load.py): pass your "
    "users with --locustfile FILE (Locust users, no shape of their own)"
)
NO_USERS_FOR_LOAD = (
    "no workload in app.main.workloads() declares its Locust users (app/load.py): run yours "
    "with `locust -f YOURS.py,loadtest/shape.py --headless --host URL`"
)
NO_HEAVY = (
    "no workload in app.main.workloads() declares a heavy request (app.load.HeavyRequest): "
    "overload has nothing to flood"
)
NO_RESULT = (
    "no heavy request declares where its result is read back (HeavyRequest.result_path): "
    "--slow-readers has nothing to read; pass --slow-readers none"
)


@cache
def workload_load() -> WorkloadLoad:
    """What the mounted workloads declare; RunNotMade where their declarations clash."""
    try:
        return declared_load(workloads())
    except LoadDeclarationError as exc:
        raise RunNotMade(str(exc)) from None


def users_for(locustfile: Path | None) -> LocustUsers:
    """The users a spike runs: ``--locustfile``'s as they are (no options of ours, nothing
    counted by name), else the declared ones; RunNotMade with NO_USERS where there are none."""
    if locustfile is not None:
        return LocustUsers(locustfile.resolve())
    users = workload_load().users
    if users is None:
        raise RunNotMade(NO_USERS)
    return users


def heavy_requests() -> tuple[HeavyRequest, ...]:
    """The requests overload floods; RunNotMade with NO_HEAVY where none is declared."""
    heavy = workload_load().heavy
    if not heavy:
        raise RunNotMade(NO_HEAVY)
    return heavy


def readable() -> HeavyRequest:
    """The first heavy request whose result can be read back: what the slow readers read."""
    found = next((r for r in heavy_requests() if r.result_path is not None), None)
    if found is None:
        raise RunNotMade(NO_RESULT)
    return found


def locust_files(users: LocustUsers) -> str:
    """Locust's ``-f``: the users, and the spike shape that registers the --spike-* options."""
    return f"{users.file},{SHAPE_FILE}"


def main() -> int:
    try:
        sys.stdout.write(locust_files(users_for(None)) + "\n")
    except RunNotMade as exc:
        why = str(exc).replace(NO_USERS, NO_USERS_FOR_LOAD)
        sys.stderr.write(f"load: {why}\n")
        return EXIT_NOT_MADE
    return 0


if __name__ == "__main__":
    sys.exit(main())
