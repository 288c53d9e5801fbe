"""railway/legacy/: Railway's Config as Code files, railway.toml and its profile variants.

Railway ignores what it does not know, so a misspelt key, a variable table (Config as Code has
none) or a key that TOML quietly moved into the wrong table deploys without a word. These tests
check every file against the documented field list, keep the variants in step with the root
file and with profiles/profiles.toml, and make sure the start command runs the launcher the
image runs.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.profiles import ProfileSet, load_profiles

REPO = Path(__file__).resolve().parents[2]
LEGACY_DIR = REPO / "railway" / "legacy"
ROOT_FILE = LEGACY_DIR / "railway.toml"  # the service's settings; the variants add a profile
VARIANTS = sorted(p for p in LEGACY_DIR.glob("*.toml") if p != ROOT_FILE)
ALL_FILES = [ROOT_FILE, *VARIANTS]

# The documented fields, from railwayapp/docs content/docs/config-as-code/reference.md
# ("Configurable settings"). Railway's own CLI (src/commands/config/migrate.rs) reads a few
# undocumented deploy keys too (numReplicas, region, sleepApplication, ...); this project
# uses none of them, so they count as typos here.
TOP_LEVEL_KEYS = {"$schema", "build", "deploy", "environments"}
BUILD_KEYS = {
    "builder",
    "watchPatterns",
    "buildCommand",
    "dockerfilePath",
    "railpackVersion",
    "nixpacksConfigPath",
    "nixpacksPlan",
    "nixpacksVersion",
}
DEPLOY_KEYS = {
    "startCommand",
    "preDeployCommand",
    "multiRegionConfig",
    "healthcheckPath",
    "healthcheckTimeout",
    "restartPolicyType",
    "restartPolicyMaxRetries",
    "cronSchedule",
    "overlapSeconds",
    "drainingSeconds",
}
BUILDERS = {"RAILPACK", "DOCKERFILE", "NIXPACKS"}
RESTART_POLICIES = {"ON_FAILURE", "ALWAYS", "NEVER"}
INTEGER_KEYS = {
    "healthcheckTimeout",
    "restartPolicyMaxRetries",
    "overlapSeconds",
    "drainingSeconds",
}

# What this service needs from every file.
REQUIRED = {
    ("build", "builder"): "DOCKERFILE",
    ("build", "dockerfilePath"): "Dockerfile",
    ("deploy", "healthcheckPath"): "/healthz",
    ("deploy", "restartPolicyType"): "ON_FAILURE",
}
REQUIRED_PRESENT = [
    ("deploy", "healthcheckTimeout"),
    ("deploy", "restartPolicyMaxRetries"),
    ("deploy", "drainingSeconds"),
]
LAUNCH_ARGV = ["python", "-m", "app.launch"]  # the image's CMD
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles()


@pytest.fixture(scope="module")
def grace_seconds() -> float:
    """The service's default SIGTERM grace; Railway's drainingSeconds must outlast it."""
    return float(Settings.model_fields["shutdown_grace_seconds"].default)


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def schema_problems(section: dict[str, Any], where: str) -> list[str]:
    """Keys outside the documented build/deploy fields, and values of the wrong kind."""
    problems: list[str] = []
    for table, allowed in (("build", BUILD_KEYS), ("deploy", DEPLOY_KEYS)):
        body = section.get(table, {})
        if not isinstance(body, dict):
            problems.append(f"{where}{table}: must be a table")
            continue
        for key, value in body.items():
            if key not in allowed:
                problems.append(f"{where}{table}.{key}: not a documented Config as Code field")
            elif key in INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{where}{table}.{key}: must be an integer, got {value!r}")
        if body.get("builder", "DOCKERFILE") not in BUILDERS:
            problems.append(f"{where}build.builder: {body['builder']!r} not in {sorted(BUILDERS)}")
        policy = body.get("restartPolicyType", "ON_FAILURE")
        if policy not in RESTART_POLICIES:
            problems.append(f"{where}deploy.restartPolicyType: {policy!r} not allowed")
    return problems


def start_command_problems(command: Any, profiles: ProfileSet) -> list[str]:
    """A start command must be `env MEMORY_PROFILE=<deployable profile> python -m app.launch`.

    With a Dockerfile, Railway runs it in exec form (no shell): a bare `NAME=value` word would
    be taken for the program and `$VAR` is passed on literally, while `env` sets the variable
    whether or not a shell is in between.
    """
    if not isinstance(command, str):
        return [f"deploy.startCommand: must be a string, got {command!r}"]
    if any(c in command for c in "$;&|<>`"):
        return [f"deploy.startCommand: {command!r} needs a shell; it runs in exec form"]
    words = shlex.split(command)
    end = 1
    while end < len(words) and ASSIGNMENT.match(words[end]):
        end += 1
    given = dict(word.split("=", 1) for word in words[1:end])
    if words[:1] != ["env"] or words[end:] != LAUNCH_ARGV or "MEMORY_PROFILE" not in given:
        return [
            f"deploy.startCommand: {command!r} is not "
            f"`env MEMORY_PROFILE=<profile> {' '.join(LAUNCH_ARGV)}`"
        ]
    name = given["MEMORY_PROFILE"]
    if name not in profiles.profiles:
        return [f"deploy.startCommand: MEMORY_PROFILE={name!r} is not in profiles.toml"]
    if not profiles.profiles[name].deploy:
        return [f"deploy.startCommand: MEMORY_PROFILE={name!r} is a baseline, not deployable"]
    return []


def problems(doc: dict[str, Any], profiles: ProfileSet, grace_seconds: float) -> list[str]:
    """Everything wrong with one parsed railway.toml for this service; empty when it is fine."""
    found = [f"{key}: not a documented top-level table" for key in doc if key not in TOP_LEVEL_KEYS]
    found += schema_problems(doc, "")
    for env_name, section in doc.get("environments", {}).items():
        extra = set(section) - {"build", "deploy"}
        found += [f"environments.{env_name}.{key}: not build or deploy" for key in sorted(extra)]
        found += schema_problems(section, f"environments.{env_name}.")
    for (table, key), wanted in REQUIRED.items():
        if doc.get(table, {}).get(key) != wanted:
            found.append(f"{table}.{key}: must be {wanted!r}, got {doc.get(table, {}).get(key)!r}")
    for table, key in REQUIRED_PRESENT:
        if key not in doc.get(table, {}):
            found.append(f"{table}.{key}: missing (a key below another [table] header lands there)")
    draining = doc.get("deploy", {}).get("drainingSeconds")
    if isinstance(draining, int) and draining < grace_seconds:
        found.append(f"deploy.drainingSeconds: {draining} s is below the {grace_seconds:g} s grace")
    if "startCommand" in doc.get("deploy", {}):
        found += start_command_problems(doc["deploy"]["startCommand"], profiles)
    return found


def profile_of(doc: dict[str, Any]) -> str | None:
    command = doc.get("deploy", {}).get("startCommand")
    if command is None:
        return None
    given = dict(w.split("=", 1) for w in shlex.split(command) if ASSIGNMENT.match(w))
    return given.get("MEMORY_PROFILE")


def without_start_command(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        **doc,
        "deploy": {k: v for k, v in doc.get("deploy", {}).items() if k != "startCommand"},
    }


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_file_is_valid_config_as_code(
    path: Path, profiles: ProfileSet, grace_seconds: float
) -> None:
    assert problems(load(path), profiles, grace_seconds) == []


def test_root_file_leaves_the_profile_to_the_image() -> None:
    """No start command: the image's CMD runs the default profile, or MEMORY_PROFILE's."""
    assert "startCommand" not in load(ROOT_FILE).get("deploy", {})


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_variant_equals_root_except_start_command(path: Path) -> None:
    variant = load(path)
    assert "startCommand" in variant["deploy"]
    assert without_start_command(variant) == load(ROOT_FILE)


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_variant_is_named_after_its_profile(path: Path) -> None:
    assert profile_of(load(path)) == path.stem


def test_every_deployable_profile_but_the_default_has_a_variant(profiles: ProfileSet) -> None:
    wanted = {p.name for p in profiles.profiles.values() if p.deploy and p.name != profiles.default}
    assert {path.stem for path in VARIANTS} == wanted


def test_dockerfile_path_names_a_file() -> None:
    assert (REPO / load(ROOT_FILE)["build"]["dockerfilePath"]).is_file()


def image_command(dockerfile: Path) -> list[str]:
    """ENTRYPOINT + CMD of the Dockerfile's last stage, as argv (shell form via /bin/sh -c)."""
    from dockerfile_parse import DockerfileParser

    with dockerfile.open("rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    stage: dict[str, list[str]] = {}
    for item in structure:
        instruction = item["instruction"]
        if instruction == "FROM":
            stage = {}
        elif instruction in ("ENTRYPOINT", "CMD"):
            value = item["value"].strip()
            stage[instruction] = (
                json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            )
    return stage.get("ENTRYPOINT", []) + stage.get("CMD", [])


def test_start_command_runs_what_the_image_runs() -> None:
    """Railway runs a start command in place of the image's ENTRYPOINT, so ENTRYPOINT + CMD
    must be the launcher itself: then a variant starts exactly what the image starts."""
    dockerfile = REPO / load(ROOT_FILE)["build"]["dockerfilePath"]
    if not dockerfile.is_file():
        pytest.skip(f"{dockerfile.name} not found (test_dockerfile_path_names_a_file fails)")
    assert image_command(dockerfile) == LAUNCH_ARGV


GOOD = ROOT_FILE.read_text()
VARIANT_LINE = 'startCommand = "env MEMORY_PROFILE=glibc python -m app.launch"\n'


def with_deploy_line(line: str, text: str = GOOD) -> str:
    return text.replace("[deploy]\n", f"[deploy]\n{line}")


BAD_FILES = {
    # The trap: a variable table swallows every key written after its header.
    "variable-table": (
        GOOD.replace('restartPolicyType = "ON_FAILURE"\n', "")
        + "\n[deploy.environmentVariables]\n"
        + 'MEMORY_PROFILE = "glibc"\nrestartPolicyType = "ON_FAILURE"\n',
        "environmentVariables",
    ),
    "top-level-variables": (GOOD + '\n[variables]\nMEMORY_PROFILE = "glibc"\n', "variables"),
    "misspelt-key": (with_deploy_line("healthCheckTimeout = 60\n"), "healthCheckTimeout"),
    "railpack": (GOOD.replace('"DOCKERFILE"', '"RAILPACK"'), "build.builder"),
    "draining-below-grace": (GOOD.replace("drainingSeconds = 15", "drainingSeconds = 5"), "grace"),
    "draining-as-string": (
        GOOD.replace("drainingSeconds = 15", 'drainingSeconds = "15"'),
        "integer",
    ),
    "no-healthcheck": (GOOD.replace('healthcheckPath = "/healthz"\n', ""), "healthcheckPath"),
    "unknown-profile": (with_deploy_line(VARIANT_LINE.replace("=glibc", "=hoard")), "hoard"),
    "candidate-profile": (
        with_deploy_line(VARIANT_LINE.replace("=glibc", "=tcmalloc")),
        "not deployable",
    ),
    "baseline-profile": (with_deploy_line(VARIANT_LINE.replace("=glibc", "=baseline")), "baseline"),
    "bare-assignment": (with_deploy_line(VARIANT_LINE.replace("env ", "")), "not `env"),
    "shell-expansion": (
        with_deploy_line('startCommand = "env MEMORY_PROFILE=$PROFILE python -m app.launch"\n'),
        "exec form",
    ),
    "other-launcher": (
        with_deploy_line(VARIANT_LINE.replace("-m app.launch", "-m uvicorn app.main:app")),
        "not `env",
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_rejected(
    text: str, expected: str, profiles: ProfileSet, grace_seconds: float
) -> None:
    found = problems(tomllib.loads(text), profiles, grace_seconds)
    assert any(expected in problem for problem in found), found


def test_good_variant_text_passes(profiles: ProfileSet, grace_seconds: float) -> None:
    """The negative cases above differ from a passing file by one edit each."""
    assert problems(tomllib.loads(with_deploy_line(VARIANT_LINE)), profiles, grace_seconds) == []
