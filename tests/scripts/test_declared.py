"""The verifier reads the load through the frame: what it drives when the workloads declare
users and heavy requests, and the one line it stops with when they do not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from app.frame import Frame
from app.load import BodyShape, HeavyRequest, LocustUsers, WorkloadLoad
from scripts.verify import cli
from scripts.verify.core import declared
from scripts.verify.core.errors import RunNotMade


class Mounted:
    settings_type = BaseSettings

    def __init__(self, load: WorkloadLoad | None = None) -> None:
        if load is not None:
            self.load = load

    def mount(self, frame: Frame) -> None:
        pass


@pytest.fixture
def mounted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Make app.main.workloads() return these, as a fork's app/main.py would."""

    def mount(*workloads: Mounted) -> None:
        monkeypatch.setattr(declared, "workloads", lambda: list(workloads))
        declared.workload_load.cache_clear()

    yield mount
    declared.workload_load.cache_clear()


def test_a_locustfile_given_is_run_as_it_is(tmp_path: Path) -> None:
    users = declared.users_for(tmp_path / "mine.py")
    assert users == LocustUsers(tmp_path / "mine.py")  # no options of ours, nothing counted


def test_the_declared_users_are_run_when_none_is_given(mounted: Callable[..., None]) -> None:
    users = LocustUsers(Path("/fork/app/notes/locustfile.py"), heavy_names=("/notes",))
    mounted(Mounted(), Mounted(WorkloadLoad(users)))
    assert declared.users_for(None) == users
    assert declared.locust_files(users) == f"{users.file},{declared.SHAPE_FILE}"


def test_no_users_declared_is_one_line_naming_the_flag(
    mounted: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    mounted(Mounted())
    with pytest.raises(RunNotMade, match="pass your users with --locustfile FILE"):
        declared.users_for(None)
    assert declared.main() == 2  # `make load` stops too, with its own one line
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("load: no workload") and "loadtest/shape.py" in line


def test_clashing_declarations_stop_the_run(mounted: Callable[..., None]) -> None:
    first, second = (Mounted(WorkloadLoad(LocustUsers(Path(name)))) for name in ("a.py", "b.py"))
    mounted(first, second)
    with pytest.raises(RunNotMade, match="a spike runs one scenario"):
        declared.users_for(None)


def test_the_slow_readers_read_the_first_request_that_stores(
    mounted: Callable[..., None],
) -> None:
    def body(shape: BodyShape) -> bytes:
        return b"{}"

    notes = HeavyRequest("/notes", body, BodyShape(1))
    files = HeavyRequest("/files", body, BodyShape(1), result_path="/files/{id}")
    mounted(Mounted(WorkloadLoad(None, (notes,))))
    assert declared.heavy_requests() == (notes,)
    with pytest.raises(RunNotMade, match="--slow-readers none"):
        declared.readable()
    mounted(Mounted(WorkloadLoad(None, (notes, files))))
    assert declared.readable() is files


def test_overload_with_nothing_to_flood_is_one_line_and_starts_nothing(
    mounted: Callable[..., None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mounted(Mounted())
    out = tmp_path / "out"
    code = cli.main(["overload", "--levels", "1", "--slow-readers", "none", "--out", str(out)])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("overload: run not made: no workload") and "heavy request" in line
    assert not out.exists()
