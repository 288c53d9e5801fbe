"""The catalogue example (examples/catalogue): many small objects behind a database driver,
verified end to end as a user verifies their own service.

Real processes: the verifier starts the example's own command inside a real 500 MB memory cgroup
(where this machine allows one), runs its own Locust users under the spike-then-idle shape, and
must come to a verdict with its numbers and the kernel's peak; then compare runs it under the
glibc yardstick and the default profile, two rounds each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify.core.loadrun import locust_available
from tests.examples.lifting import COMPARED, assert_compared, lift, meta_of, verdict_rows, verify

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


def test_compare_runs_the_catalogue_under_glibc_and_the_default(
    project: Path, tmp_path: Path
) -> None:
    done = verify("compare", project, tmp_path, "--rows", ",".join(COMPARED), "--rounds", "2")
    rows = assert_compared(done, tmp_path)
    assert all(row["failures"] == 0 for row in rows), done.stdout
