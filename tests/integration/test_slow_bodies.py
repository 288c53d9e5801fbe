"""The slow-body budget flood on a real server in a real 500 MB memory cgroup: Qualys's
`slowhttptest -B` holds 40 connections to POST /bulk/sync, each declaring a 7 MB body and sending
about 1 KB a second (above the body rate floor), while a legitimate client, in a process of its
own, posts the route's largest body (~7.7 MB) at most once a second. Before the reservation
followed the body's arrival, three attackers held the in-flight budget and most legitimate posts
got 503; now the attackers hold what they sent, and the legitimate posts are served.

Under uvicorn's h11 with the edge's protocol (the service as built), and under Granian, which
has no edge: what protects here is the memory package's, at the ASGI level.

Needs root and a memory controller, and Debian's `slowhttptest`; in CI both are required.
"""

from __future__ import annotations

import os

import pytest

from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.run import large_body
from scripts.verify.overload.slowbody import SlowBodyRun, SlowBodySettings, run_slow_bodies

pytestmark = pytest.mark.slow
DEFAULT = "jemalloc-nopymalloc"
MIN_SERVED_SHARE = 0.9  # of the legitimate posts, answered 201 under the flood


def flood(server: str) -> SlowBodyRun:
    settings = SlowBodySettings(seconds=20, overrides={"SERVER": server})
    try:
        return run_slow_bodies(DEFAULT, settings, large_body(), quiet_phase=False)
    except RunNotMade as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the slow-body flood: {exc}")
        pytest.skip(str(exc))


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_slow_bodies_declared_large_leave_the_budget_to_a_legitimate_client(server: str) -> None:
    run = flood(server)
    figures = run.as_dict()
    assert run.alive and run.oom_kills == 0, figures
    # The attack held its connections for the whole run: none was cut by a floor.
    assert run.attack_connected == run.settings.attackers, run.attack_tail
    assert run.flooded.sent >= 5, figures
    assert run.flooded.created >= MIN_SERVED_SHARE * run.flooded.sent, figures
    assert "Traceback" not in run.server_log.read_text()
