"""scripts/verify/core/docker_engine.py: where its builds are cached, what the Dockerfile starts
from, and the build command. The engine itself is started for real by tests/container."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify.core import docker_engine
from scripts.verify.core.docker_engine import BuildFailed, Engine


def test_caches_live_where_the_variable_says_else_in_the_checkout(tmp_path: Path) -> None:
    assert docker_engine.cache_root({}, tmp_path) == tmp_path / ".cache"
    assert docker_engine.cache_root({"LMS_CACHE_DIR": " "}, tmp_path) == tmp_path / ".cache"
    named = {"LMS_CACHE_DIR": "/var/cache/lms"}
    assert docker_engine.cache_root(named, tmp_path) == Path("/var/cache/lms")


def test_the_engine_lives_beside_the_checkout_it_builds() -> None:
    assert (docker_engine.REPO_ROOT / "Dockerfile") == docker_engine.DOCKERFILE
    assert docker_engine.DOCKERFILE.is_file()


def test_the_base_image_is_the_first_from(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "# syntax=docker/dockerfile:1\nFROM --platform=$BUILDPLATFORM debian:trixie-slim AS build"
        "\nFROM python:3.13\n"
    )
    assert docker_engine.base_image(dockerfile) == "debian:trixie-slim"
    dockerfile.write_text("RUN true\n")
    with pytest.raises(ValueError, match="no FROM line"):
        docker_engine.base_image(dockerfile)


@pytest.mark.parametrize(
    ("image", "suite"),
    [("debian:trixie-slim", "trixie"), ("library/debian:bookworm", "bookworm"),
     ("python:3.13-slim", None), ("debian:trixie-slim@sha256:ab", None)],
)  # fmt: skip
def test_debootstrap_stands_in_only_for_a_debian_suite(image: str, suite: str | None) -> None:
    assert docker_engine.debian_suite(image) == suite


def test_the_build_needs_buildkit_and_names_the_dockerfile() -> None:
    with pytest.raises(BuildFailed, match="BuildKit"):
        docker_engine.build_command(Engine(client="docker", env={}), "t:1")
    argv = docker_engine.build_command(Engine(client="docker", env={}, buildkit=True), "t:1")
    assert argv[:5] == ["docker", "build", "--progress=plain", "-t", "t:1"]
    assert argv[argv.index("-f") + 1] == str(docker_engine.DOCKERFILE)
    assert argv[-1] == str(docker_engine.REPO_ROOT)
