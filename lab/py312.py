"""The selection of tests in lab/sid.py under CPython 3.12: `python -m lab.py312`.

`requires-python` admits 3.12, the interpreter of Ubuntu 24.04, and no Debian suite ships it
(bookworm has 3.11, trixie 3.13, unstable 3.13 and 3.14). This kind of machine carries CPython
builds under pyenv's root (`$PYENV_ROOT`, else ~/.pyenv): the newest 3.12 there gets a venv from
requirements-dev.lock with `--require-hashes`, cached under .cache/py312/ (or $LMS_CACHE_DIR/py312/)
and remade when the lock changes, and pytest runs lab.sid.TESTS in it on this checkout.

`--minor 3.13` does the same with pyenv's newest 3.13 (cached under py313/): the interpreter with
CPython's own mimalloc (PYTHONMALLOC=mimalloc) that the python-mimalloc profiles need.
`--venv-only` makes the venv and prints its interpreter's path, running no tests: the verifier's
`compare --command` then starts the service with it (docs/memory-manager.md, "Candidate
profiles").

  exit 0     the tests passed
  exit 1-5   pytest's own status (failures, interrupted, internal error, usage, none collected)
  exit 6     no 3.12 was found, or the venv could not be made (the message says which)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.sid import IGNORED, SETUP_FAILED, TESTS, lock_digest, run_and_report
from scripts.verify.core.docker_engine import CACHE_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = CACHE_DIR / "py312"
MINOR = "3.12"
PIP_SECONDS = 900


def say(line: str, minor: str = MINOR) -> None:
    sys.stdout.write(f"py{minor.replace('.', '')}: {line}\n")
    sys.stdout.flush()


def pyenv_root(environ: Mapping[str, str]) -> Path:
    """Where pyenv keeps its interpreters: $PYENV_ROOT, else ~/.pyenv."""
    return Path(environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def find_interpreter(root: Path, minor: str = MINOR) -> Path | None:
    """The newest final release of ``minor`` under pyenv's versions/, or None."""
    pattern = re.compile(re.escape(minor) + r"\.(\d+)\Z")  # 3.12.1, not 3.12-dev or 3.12.1t
    found = []
    for version in (root / "versions").glob(f"{minor}.*"):
        match = pattern.match(version.name)
        binary = version / "bin" / f"python{minor}"
        if match and binary.is_file():
            found.append((int(match.group(1)), binary))
    return max(found)[1] if found else None


def prepare_venv(interpreter: Path, venv: Path, lock: Path, log: Path) -> None:
    """The venv from the dev lock, with hashes, remade when the lock or the interpreter changes."""
    stamp = venv / ".lock-sha256"
    digest = f"{lock_digest(lock)} {interpreter}"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)
    with open(log, "ab") as out:
        for step in (
            [str(interpreter), "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
             "--disable-pip-version-check", "--require-hashes", "-r", str(lock)],
        ):
            done = subprocess.run(step, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=PIP_SECONDS, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step[:3])} exited {done.returncode}; see {log}")
    say(f"venv from {lock.name} in {time.monotonic() - started:.0f} s")
    stamp.write_text(digest + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n", 1)[0].replace("\n", " ")
    parser = argparse.ArgumentParser(prog="python -m lab.py312", description=summary)
    parser.add_argument("--cache", type=Path, help="where the venv is kept (default: py3NN/)")
    parser.add_argument("--minor", default=MINOR, help=f"the CPython version (default {MINOR})")
    parser.add_argument(
        "--venv-only", action="store_true", help="make the venv, print its python, run no tests"
    )
    args, pytest_args = parser.parse_known_args(argv)  # the rest goes to pytest
    cache = args.cache or CACHE_DIR / f"py{args.minor.replace('.', '')}"
    root = pyenv_root(os.environ)
    interpreter = find_interpreter(root, args.minor)
    if interpreter is None:
        say(f"setup failed: no CPython {args.minor} under {root / 'versions'}", args.minor)
        return SETUP_FAILED
    venv = cache / "venv"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        prepare_venv(interpreter, venv, REPO_ROOT / "requirements-dev.lock", cache / "setup.log")
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        say(f"setup failed: {exc}")
        return SETUP_FAILED
    version = subprocess.run([str(interpreter), "-V"], capture_output=True, text=True,
                             check=False).stdout.strip()
    if args.venv_only:
        sys.stdout.write(f"{venv / 'bin' / 'python'}\n")
        return 0
    say(f"{version} ({interpreter}); pytest on {' '.join(TESTS)}")
    os.chdir(REPO_ROOT)  # the selection's paths are the checkout's
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider",
               *(f"--ignore={path}" for path in IGNORED), *pytest_args, *TESTS]
    return run_and_report(command, say)


if __name__ == "__main__":
    sys.exit(main())
