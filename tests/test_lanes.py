"""The heavy tests' xdist lanes (tests/conftest.py), as this lock's pytest and pytest-xdist run
them: in a scratch project that uses the same hook, the tests marked `slow` under an `integration`
folder land on one worker, the other slow ones on one worker, every `container` test on one worker.
A pytest or xdist that stops honouring the groups (pytest 9.2 with xdist 3.8 silently did) fails
here, not as a flaky measurement."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = '''
import pytest

@pytest.mark.slow
@pytest.mark.parametrize("n", range(6))
def test_load(n):
    pass

@pytest.mark.container
@pytest.mark.parametrize("n", range(6))
def test_image(n):
    pass

@pytest.mark.parametrize("n", range(12))
def test_light(n):
    pass
'''
INI = """[pytest]
markers =
    slow: load
    container: image
"""


def test_slow_and_container_tests_each_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_scratch.py").write_text(TESTS)
    (tmp_path / "integration").mkdir()
    (tmp_path / "integration" / "test_service.py").write_text(TESTS.replace("test_", "test_svc_"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "4", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", "test_scratch.py", "integration"],
        cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    placed = re.findall(r"\[(gw\d+)\].*PASSED \S+::test_(\w+)\[\d+\]", done.stdout)
    workers: dict[str, set[str]] = {}
    for worker, kind in placed:
        kind = "image" if kind == "svc_image" else kind  # one container lane for both folders
        workers.setdefault(kind, set()).add(worker)
    assert len(placed) == 48, done.stdout
    assert len(workers["load"]) == 1 and len(workers["svc_load"]) == 1, workers
    assert len(workers["image"]) == 1, workers  # one container lane, wherever the test lives
