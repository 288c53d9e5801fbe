"""One Docker engine and one image build for the whole container suite.

Where no engine can be had (not root and none running, or no dockerd), the tests skip with one
reason; with CI=true they fail instead, as CI must prove the image. A base image that is a local
debootstrap stand-in is said so in the summary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import pytest

from scripts.verify.core import docker_engine
from tests.conftest import RunSummary


@dataclass(frozen=True)
class Image:
    engine: docker_engine.Engine
    tag: str
    stand_in: bool


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the container tests to run: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def image(summary: RunSummary) -> Iterator[Image]:
    """The service image, built once from the unchanged Dockerfile; a private engine is stopped
    after the test run unless another process still uses it."""
    try:
        engine = docker_engine.ensure_engine()
    except docker_engine.EngineUnavailable as exc:
        _unavailable(str(exc))
    shown = 0
    try:
        try:
            stand_in = docker_engine.ensure_base_image(engine)
        except docker_engine.EngineUnavailable as exc:
            _unavailable(str(exc))
        try:
            docker_engine.build_image(engine, docker_engine.IMAGE_TAG)
        except docker_engine.BuildFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        summary.extend(engine.notes)
        shown = len(engine.notes)
        builder = "BuildKit" if engine.buildkit else "classic builder"
        where = "a private dockerd" if engine.private else "the running engine"
        summary.append(f"image {docker_engine.IMAGE_TAG} built with {builder} on {where}")
        yield Image(engine=engine, tag=docker_engine.IMAGE_TAG, stand_in=stand_in)
    finally:
        engine.stop()
        summary.extend(engine.notes[shown:])  # e.g. an engine left to another run using it
