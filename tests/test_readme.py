"""The README's code and commands are the ones that work."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from app.profiles import load_profiles

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
LIFT_OUT = (REPO / "docs" / "lift-out.md").read_text()
LIFT = "### Lift: the memory manager in your own service"


def block_after(heading: str, language: str, text: str = README) -> str:
    section = text.split(heading, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1)


def python_block_after(heading: str) -> str:
    return block_after(heading, "python")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_lift_snippet_runs_as_pasted(tmp_path: Path) -> None:
    """Pasted unchanged into a project whose copy of the folder is `yourpkg/memory`, as the
    README says, and served: health, metrics, and the status route with its token only."""
    snippet = python_block_after(LIFT)
    assert "from yourpkg.memory import" in snippet and "app.memory" not in snippet
    package = tmp_path / "yourpkg"
    shutil.copytree(REPO / "app" / "memory", package / "memory",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("")
    (tmp_path / "service.py").write_text(snippet)
    program = "\n".join([
        "from fastapi.testclient import TestClient",
        "from service import app, jobs, memory",
        "jobs['a'] = b'x'",
        "token = {'Authorization': 'Bearer ' + 'status-token-0123456789'}",
        "with TestClient(app) as client:",
        "    assert memory.loop.running",
        "    assert client.get('/healthz').json() == {'status': 'ok'}",
        "    assert 'myservice_memory_rss_bytes' in client.get('/metrics').text",
        "    assert client.get('/debug/memory').status_code == 401",
        "    status = client.get('/debug/memory', headers=token).json()",
        "    assert status['jobs'] == {'count': 1} and status['rss_bytes'] > 0",
        "    assert '/debug/memory' not in client.get('/openapi.json').json()['paths']",
        "    assert memory.activity.requests == 1  # the schema; probes and status are quiet",
        "assert not memory.loop.running",
        "print('snippet ok')",
    ])
    environ = {"PATH": "/usr/bin:/bin", "STATUS_TOKEN": "status-token-0123456789"}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=environ, capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "snippet ok" in result.stdout


def test_the_fork_snippet_is_the_tested_example() -> None:
    """The README's mount() is the one docs/lift-out.md gives whole (tests/app/test_seam.py
    mounts that)."""
    fragment = python_block_after("### Fork: replace the workload")
    example = block_after("## Fork", "python", LIFT_OUT)
    assert textwrap.indent(fragment, "    ") in example


def test_the_two_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_the_dockerfile_lines_are_the_default_profile() -> None:
    profiles = load_profiles()
    profile = profiles.get(None)
    lines = dockerfile_instructions(
        block_after("## Without the launcher", "dockerfile", LIFT_OUT)
    )
    installed = " ".join(args for op, args in lines if op == "RUN")
    assert profile.preload == "libjemalloc.so.2"  # Debian ships it as libjemalloc2
    assert re.search(r"apt-get install .*\blibjemalloc2\b", installed)
    env = dict(
        pair.split("=", 1) for op, args in lines if op == "ENV" for pair in shlex.split(args)
    )
    assert env == {"LD_PRELOAD": profile.preload, **profile.env}
    assert f"`{profile.name}`" in LIFT_OUT.split("## Without the launcher", 1)[1]


def test_the_supported_python_range_leaves_out_the_growing_3_14_collector() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    supported = SpecifierSet(pyproject["project"]["requires-python"])
    assert ".".join(map(str, sys.version_info[:3])) in supported  # the one running this test
    assert not [patch for patch in range(5) if f"3.14.{patch}" in supported]
    assert "3.14.5" in supported and "3.10.14" not in supported
    assert "3.14.5" in README
