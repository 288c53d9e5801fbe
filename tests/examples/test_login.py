"""The login example (examples/login): a 64 MiB scrypt block per login, freed within a fraction
of a second, verified end to end as a user verifies their own service.

Real processes, as tests/examples/test_catalogue.py. What this kind adds: the blocks come and go
between the verifier's samples, so only the kernel's high-water marks show them; the run must
report a peak at least one block above the start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify.core.loadrun import locust_available
from tests.conftest import SERVICE_LANE
from tests.examples.lifting import COMPARED, assert_compared, lift, verdict_rows, verify

pytestmark = [
    pytest.mark.slow,
    # In the service's lane, not the tools' with the other examples: the tools' lane is CI's
    # critical path, and these six minutes would lengthen it by as much (docs/ci.md).
    pytest.mark.xdist_group(SERVICE_LANE),
    pytest.mark.skipif(not locust_available(), reason="needs Locust"),
]

BLOCK_MB = 64.0  # 128 x r x n bytes of scrypt, n = 2**16, r = 8 (examples/login/passwords.py)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lift("login", tmp_path_factory.mktemp("login"))


def test_the_verifier_judges_the_login_service_and_sees_its_blocks(
    project: Path, tmp_path: Path
) -> None:
    done = verify("run", project, tmp_path)
    (row,) = verdict_rows(done, tmp_path)
    assert row["rss_peak_mb"] >= row["start_mb"] + BLOCK_MB, row
    assert row["failures"] == 0, done.stdout


def test_compare_runs_the_login_service_under_glibc_and_the_default(
    project: Path, tmp_path: Path
) -> None:
    done = verify("compare", project, tmp_path, "--rows", ",".join(COMPARED), "--rounds", "2")
    rows = assert_compared(done, tmp_path)
    assert all(row["rss_peak_mb"] >= row["start_mb"] + BLOCK_MB for row in rows), rows
