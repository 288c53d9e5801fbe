"""The slow-reader split's plan, and the fast-reader A B in one tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.readers.__main__ import MISSING_ID, main, plan
from scripts.verify.core.declared import readable
from scripts.verify.core.errors import EXIT_PASS

REPO = Path(__file__).resolve().parents[2]


def test_the_split_asks_for_more_at_each_part() -> None:
    """Silent connections, then a request answered on the loop, then one inside the app, then a
    large reply: the differences between neighbours are what each adds. (A real split stores
    four 9.6 MB results per part: minutes, so it is not run here; its runs are the verifier's
    slow-reader level, tested in tests/integration/test_outbound.py.)"""
    parts = plan()
    assert [requests for _, requests, _ in parts] == [0, 1, 1, 1]
    assert parts[1][2] == ["/healthz"]
    assert parts[2][2] == [readable().result_of(MISSING_ID)]
    assert parts[3][2] is None  # the stored results, as the verifier's level asks


@pytest.mark.slow
def test_a_fast_read_of_two_checkouts_gives_both_medians(tmp_path: Path) -> None:
    code = main(["--out", str(tmp_path), "fast", "--before", str(REPO), "--reads", "2"])
    assert code == EXIT_PASS
    found = json.loads((tmp_path / "readers.json").read_text())["found"]
    assert found["reads"] == 2
    assert found["median_ms"]["before"] > 0 and found["median_ms"]["after"] > 0
    assert found["after_over_before"] > 0
