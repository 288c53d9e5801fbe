"""The lines a run's summary opens with: what a published summary may say of the machine."""

from __future__ import annotations

from pathlib import Path

from scripts.verify.core.context import REPO, command_lines, shown_path


def test_a_file_in_the_repository_is_named_from_its_root() -> None:
    inside = REPO / "app" / "workload" / "load" / "locustfile.py"
    assert shown_path(inside) == "app/workload/load/locustfile.py"
    assert shown_path(Path("/srv/theirs/locustfile.py")) == "/srv/theirs/locustfile.py"


def test_the_command_is_quoted_as_typed_and_absent_without_one() -> None:
    assert command_lines(["run", "--preset", "short"]) == [
        "command: `python -m scripts.verify run --preset short`"
    ]
    assert command_lines(None) == [] and command_lines([]) == []
