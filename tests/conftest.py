"""Fixtures for every test folder: a real PostgreSQL server for the results store."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
