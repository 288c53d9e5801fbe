"""mypy over app/ and the tools (scripts/, loadtest/, lab/), strict on app/memory and the modules
pyproject.toml [tool.mypy] lists, as `make typecheck` runs it: the typed contracts between modules
are checked, not just written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("app", "scripts", "loadtest", "lab")  # pyproject.toml's [tool.mypy] files
IGNORE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")


def test_mypy_finds_no_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_type_ignore_says_why() -> None:
    """On its own line after a second `#`, or in the comment line just above it."""
    unexplained = []
    paths = [p for folder in CHECKED for p in sorted((REPO / folder).rglob("*.py"))]
    for path in paths:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            found = IGNORE.search(line)
            if found is None:
                continue
            same_line = found.group("rest").strip().startswith("#")
            above = number > 0 and lines[number - 1].strip().startswith("#")
            if not (same_line or above):
                unexplained.append(f"{path.relative_to(REPO)}:{number + 1}")
    assert not unexplained, f"a type: ignore without its reason: {unexplained}"
