"""Fixtures for every test folder: a real PostgreSQL server for the results store, lines for the
end-of-run summary, and the heavy tests' xdist lanes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.verify.core.postgres import Cluster, make_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway cluster for the whole test run; skipped where PostgreSQL is not installed,
    except in CI (CI=true), where that fails: .ci/run installs it."""
    try:
        cluster = make_cluster()
    except (FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the PostgreSQL store: {exc}")
        pytest.skip(str(exc))
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database on the test run's cluster: its URL (no password: trust on
    loopback)."""
    return postgres_cluster.create_database()


# Under `pytest -n N --dist loadgroup` (make test, .ci/run) the tests spread over N workers,
# except three lanes, each run by one worker one test after another: the container tests (one
# image build, one engine), and the other tests marked `slow` (a real server driven by a load
# generator for tens of seconds: Locust, slowhttptest, floods) in two lanes, the service's own
# (tests/integration) and the tools' (the verifier, the lifted package, the examples). So a
# lane's tests never measure each other, and at most two loads and one container run beside the
# light tests. One lane for every slow test took 20 minutes alone. A test that names its own
# xdist_group keeps it.
CONTAINER_LANE, SERVICE_LANE, TOOLS_LANE = "container", "load-service", "load-tools"


def lane_of(item: pytest.Item) -> str | None:
    if item.get_closest_marker("container"):
        return CONTAINER_LANE
    if item.get_closest_marker("slow"):
        return SERVICE_LANE if "integration" in item.path.parts else TOOLS_LANE
    return None


# First: xdist's own hook reads the group marks to route the tests, so they must be there by then.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if (lane := lane_of(item)) is not None:
            item.add_marker(pytest.mark.xdist_group(lane))


# Lines a test wants in the end-of-run summary (what an image was built on, memory measured). Under
# xdist the tests run in worker processes and the summary is printed by the controller, so the
# lines go through a file the controller makes and hands to every worker.
SUMMARY_FILE = pytest.StashKey[Path]()


class RunSummary:
    """Appends lines to the run's summary file; ``append`` as on the list it replaces."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: str) -> None:
        with self.path.open("a") as out:
            out.write(line.replace("\n", " ") + "\n")

    def extend(self, lines: list[str]) -> None:
        for line in lines:
            self.append(line)


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[SUMMARY_FILE] = Path(workerinput["summary_file"])
        return
    handle, name = tempfile.mkstemp(prefix="pytest-summary-", suffix=".txt")
    os.close(handle)
    config.stash[SUMMARY_FILE] = Path(name)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist's WorkerController, untyped
    """xdist's controller, for each worker it starts: where the summary lines go."""
    node.workerinput["summary_file"] = str(node.config.stash[SUMMARY_FILE])


def run_summary(config: pytest.Config) -> RunSummary:
    return RunSummary(config.stash[SUMMARY_FILE])


@pytest.fixture(scope="session")
def summary(pytestconfig: pytest.Config) -> RunSummary:
    """Lines a test wants in the end-of-run summary (measured memory, say)."""
    return run_summary(pytestconfig)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if getattr(config, "workerinput", None) is not None:
        return
    path = config.stash[SUMMARY_FILE]
    lines = path.read_text().splitlines() if path.exists() else []
    if lines:
        terminalreporter.section("measured")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None and SUMMARY_FILE in config.stash:
        config.stash[SUMMARY_FILE].unlink(missing_ok=True)
