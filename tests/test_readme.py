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
        "app.add_api_route('/healthz', lambda: {'status': 'ok'}, tags=['ops'])  # the user's own",
        "jobs['a'] = b'x'",
        "token = {'Authorization': 'Bearer ' + 'status-token-0123456789'}",
        "assert memory.config.interval_seconds == 5  # from the environment",
        "with TestClient(app) as client:",
        "    assert memory.loop.running",
        "    assert client.get('/healthz').json() == {'status': 'ok'}",
        "    scrape = client.get('/metrics', follow_redirects=True).text",
        "    assert 'myservice_memory_rss_bytes' in scrape",
        "    assert client.get('/debug/memory').status_code == 401",
        "    status = client.get('/debug/memory', headers=token).json()",
        "    assert status['jobs'] == {'count': 1} and status['rss_bytes'] > 0",
        "    assert '/debug/memory' not in client.get('/openapi.json').json()['paths']",
        "    assert memory.activity.requests == 1  # the schema; probes and status are quiet",
        "assert not memory.loop.running",
        "print('snippet ok')",
    ])
    environ = {
        "PATH": "/usr/bin:/bin",
        "ADMIN_TOKEN": "status-token-0123456789",
        "MEMORY_CLEANUP_INTERVAL": "5",
    }
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=environ, capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "snippet ok" in result.stdout


def test_the_lift_install_line_pins_what_the_lock_pins() -> None:
    """The two packages the memory package adds, at the lock's versions, and no others."""
    line = block_after(LIFT, "sh").splitlines()[0]
    pinned = dict(re.findall(r'"([a-z-]+)==([^"]+)"', line))
    lock = dict(
        re.findall(r"^([a-z0-9-]+)==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    )
    assert line.startswith("pip install ") and set(pinned) == {"psutil", "prometheus-client"}
    assert all(lock[name] == version for name, version in pinned.items()), (pinned, lock)


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
    assert "3.14.5" in supported and "3.15.2" in supported and "3.10.14" not in supported
    assert "3.14.5" in README


# --- the verifier's commands, as pasted ---------------------------------------------------------

VERIFY_MODULE = "-m scripts.verify"
MAKE_VERIFIER_TARGETS = ("verify", "bench", "soak")


def verifier_commands() -> list[str]:
    """Every command line in the README that runs the verifier: lines of its code blocks, and
    inline spans, that call scripts.verify or one of its make targets; `a && b` is two."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]*scripts\.verify[^`\n]*)`", README)
    commands = [part.strip() for line in lines for part in line.split("&&")]
    return [
        command
        for command in commands
        if VERIFY_MODULE in command
        or any(command.startswith(f"make {target}") for target in MAKE_VERIFIER_TARGETS)
    ]


def verifier_argv(command: str) -> list[str]:
    """The arguments the verifier gets from ``command``; a make target's as make expands it."""
    if command.startswith("make "):
        words = shlex.split(command, comments=True)
        shown = subprocess.run(
            ["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=30,
            check=True,
        ).stdout.replace("\\\n", " ")  # fmt: skip
        # A recipe of several commands (make bench): its first run of the verifier.
        steps = [step.strip() for step in re.split(r";|\|\||&&|\n", shown)]
        command = next(step for step in steps if VERIFY_MODULE in step)
    words = shlex.split(command, comments=True)
    assert words[:3] == [".venv/bin/python", "-m", "scripts.verify"], command
    return words[3:]


def test_every_verifier_command_runs_outside_the_venv() -> None:
    commands = verifier_commands()
    assert len(commands) >= 5
    for command in commands:
        # `python -m scripts.verify` outside .venv fails: No module named 'psutil'.
        assert command.startswith(("make ", ".venv/bin/python ")), command


def test_every_verifier_command_line_parses() -> None:
    from scripts.verify.cli import build_parser

    parser = build_parser()
    for command in verifier_commands():
        argv = verifier_argv(command)
        if argv != ["--help"]:
            parser.parse_args(argv)  # an unknown flag or a bad value exits 2 here


def test_the_help_command_runs_as_pasted() -> None:
    command = next(c for c in verifier_commands() if c.split("#")[0].split()[-1] == "--help")
    done = subprocess.run(
        command.split("#")[0], shell=True, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for name in ("run", "compare", "soak", "overload"):
        assert f"    {name} " in done.stdout


def test_the_lifted_example_the_readme_verifies_is_there() -> None:
    copy = next(
        line
        for line in README.splitlines()
        if line.startswith("cp -r app/memory ") and "&&" in line  # the one the verifier runs
    )
    source, target = shlex.split(copy.split("&&")[0])[2:4]
    assert (REPO / source / "__init__.py").is_file()
    example = (REPO / target).parent
    assert "memory/" in (example / ".gitignore").read_text().split()  # the copy is not committed
    argv = verifier_argv(copy.split("&&")[1].strip())
    assert (REPO / argv[argv.index("--locustfile") + 1]).is_file()
