"""The catalogue example (examples/catalogue): many small objects behind a database driver,
verified end to end as a user verifies their own service.

Real processes: the verifier starts the example's own command inside a real 500 MB memory cgroup
(where this machine allows one), runs its own Locust users under the spike-then-idle shape, and
must come to a verdict with its numbers, the kernel's peak and where what stayed sits; then
compare runs it under the default profile with its cleanup loop on and off, two rounds each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify.core.loadrun import locust_available
from tests.examples.lifting import (
    LOOP_ON_AND_OFF,
    assert_compared,
    lift,
    meta_of,
    verdict_rows,
    verify,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not locust_available(), reason="needs Locust"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lift("catalogue", tmp_path_factory.mktemp("catalogue"))


def test_the_verifier_judges_the_catalogue(project: Path, tmp_path: Path) -> None:
    done = verify("run", project, tmp_path)
    (row,) = verdict_rows(done, tmp_path)
    # Pages of two thousand rows, several at once, and the cache they fill raised memory enough
    # for the share given back to mean something: there was a spike to give back.
    assert row["returned"] is not None, row
    assert row["failures"] == 0, done.stdout
    meta = meta_of(tmp_path / "command")
    assert meta["service_at_start"]["cleanup"]["interval_seconds"] == 5.0  # the preset's
    # Where what stayed sits, read from the lifted package's status route before and after.
    assert row["stayed"].startswith("what stayed (status route): live objects "), row
    assert f"command: {row['stayed']}" in done.stdout


def test_compare_runs_the_catalogue_with_the_cleanup_loop_on_and_off(
    project: Path, tmp_path: Path
) -> None:
    rows_asked = ",".join(LOOP_ON_AND_OFF)
    done = verify("compare", project, tmp_path, "--rows", rows_asked, "--rounds", "2")
    rows = assert_compared(done, tmp_path, LOOP_ON_AND_OFF)
    assert all(row["stayed"] for row in rows), rows  # each row says what stayed, by part
    assert all(row["failures"] == 0 for row in rows), done.stdout
