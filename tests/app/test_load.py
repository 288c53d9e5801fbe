"""What workloads declare of their load, and what the frame hands the verifier from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from app.frame import Frame
from app.load import (
    BodyShape,
    HeavyRequest,
    LoadDeclarationError,
    LocustUsers,
    WorkloadLoad,
    declared_load,
)
from app.main import workloads


def _body(shape: BodyShape) -> bytes:
    return b"x" * shape.records


class Silent:
    """A workload that declares nothing: mounted and served, never driven by the verifier."""

    settings_type = BaseSettings

    def mount(self, frame: Frame) -> None:
        pass


class Declaring(Silent):
    def __init__(self, load: WorkloadLoad) -> None:
        self.load = load


def test_a_workload_that_declares_nothing_leaves_nothing_declared() -> None:
    assert declared_load([Silent()]) == WorkloadLoad()
    assert declared_load([]) == WorkloadLoad()


def test_the_users_of_one_and_the_heavy_requests_of_all() -> None:
    users = LocustUsers(Path("notes.py"))
    notes = HeavyRequest("/notes", _body, BodyShape(10))
    files = HeavyRequest("/files", _body, BodyShape(20), result_path="/files/{id}")
    mounted = [
        Declaring(WorkloadLoad(users, (notes,))), Silent(), Declaring(WorkloadLoad(None, (files,)))
    ]
    found = declared_load(mounted)
    assert found == WorkloadLoad(users, (notes, files))


def test_two_workloads_with_users_are_named_not_merged() -> None:
    first, second = LocustUsers(Path("a.py")), LocustUsers(Path("b.py"))
    named = r"2 workloads declare Locust users \(a.py, b.py\)"
    with pytest.raises(LoadDeclarationError, match=named):
        declared_load([Declaring(WorkloadLoad(first)), Declaring(WorkloadLoad(second))])


def test_a_stored_result_is_read_back_where_the_request_says() -> None:
    readable = HeavyRequest("/files", _body, BodyShape(1), result_path="/files/{id}")
    assert readable.result_of("abc") == "/files/abc"
    with pytest.raises(ValueError, match="declares no result_path"):
        HeavyRequest("/notes", _body, BodyShape(1)).result_of("abc")


def test_a_body_shape_is_records_and_an_optional_note() -> None:
    assert BodyShape.parse("20000") == BodyShape(20_000, 0)
    assert BodyShape.parse(" 3000:300 ") == BodyShape(3_000, 300)
    for bad in ("0", "x", "20000:-1"):
        with pytest.raises(ValueError):
            BodyShape.parse(bad)


def test_the_reference_workload_declares_its_users_and_its_floods() -> None:
    """What `make verify` and `verify overload` drive as this repository stands: the users
    file beside the workload, its submits counted by name, and a submit whose result is read."""
    found = declared_load(workloads())
    assert found.users is not None and found.users.file.is_file()
    assert found.users.file.is_relative_to(Path(__file__).parents[2] / "app" / "workload")
    assert found.users.heavy_names == tuple(request.path for request in found.heavy)
    assert [request.result_path for request in found.heavy] == [None, "/bulk/{id}"]
    largest = found.heavy[0].body(found.heavy[0].largest)
    assert 7 * 2**20 < len(largest) < 8 * 2**20  # under MAX_BODY_MB: accepted whole
