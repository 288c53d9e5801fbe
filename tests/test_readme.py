"""The README's code and commands are the ones that work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_embedding_snippet_runs_in_a_fresh_interpreter() -> None:
    snippet = python_block_after("### In your own service")
    program = "\n".join([
        "class _Cache:",
        "    def drop_expired(self):",
        "        return 0",
        "my_cache = _Cache()",
        snippet,
        "from fastapi.testclient import TestClient",
        "@app.get('/ping')",
        "def ping():",
        "    return {'ok': True}",
        "with TestClient(app) as client:",
        "    assert client.get('/ping').json() == {'ok': True}",
        "    assert memory.loop.running and memory.activity.requests == 1",
        "assert not memory.loop.running",
        "print('snippet ok')",
    ])
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "snippet ok" in result.stdout


def test_the_two_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()
