"""Does mimalloc 3 earn a profile? `python -m lab.mimalloc [--pairs 2] [--preset short]`.

Builds the service image (scripts/verify/core/docker_engine.py), then this folder's image on it:
Debian's `libmimalloc3` and a candidate profile, `mimalloc-nopymalloc`, appended to that image's
copy of profiles.toml. Then the verifier runs the same image under `docker run --memory=500m`, once
with the default profile and once with the candidate, in pairs whose order alternates (A B, B A,
...), each its own `python -m scripts.verify run --image`. Prints one line per run and writes
<out>/mimalloc.md with each run's row; lab/mimalloc/README.md is the report.

  exit 0  every run made (whatever the verdicts: this compares, it does not judge)
  exit 2  a run could not be made, or the image did not build
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from app.profiles import load_profiles
from scripts.verify.core import docker_engine, report

HERE = Path(__file__).resolve().parent
TAG = "lean-memory-service:mimalloc"
CANDIDATE = "mimalloc-nopymalloc"


def build(engine: docker_engine.Engine) -> None:
    """This folder's image on the freshly built service image (raises BuildFailed)."""
    done = engine.run("build", "-t", TAG, str(HERE), timeout=docker_engine.BUILD_SECONDS,
                      check=False)  # fmt: skip
    if done.returncode != 0:
        raise docker_engine.BuildFailed(f"lab image: {done.stderr[-2000:]}")
    version = engine.run(
        "run", "--rm", "--entrypoint", "dpkg-query", TAG, "-W", "-f", "${Version}",
        "libmimalloc3",
    ).stdout  # fmt: skip
    sys.stdout.write(f"{TAG}: libmimalloc3 {version}\n")


def verify(profile: str, preset: str, out: Path) -> report.Row:
    """One verifier run of the lab image under ``profile``; its row from summary.json."""
    argv = [
        sys.executable, "-m", "scripts.verify", "run", "--image", TAG, "--preset", preset,
        "--set", f"MEMORY_PROFILE={profile}", "--out", str(out), "--no-plot",
    ]  # fmt: skip
    done = subprocess.run(argv, check=False)
    summary = out / "summary.json"
    if done.returncode == 2 or not summary.is_file():
        raise RuntimeError(f"{profile}: run not made (exit {done.returncode}); see {out}")
    (row,) = report.rows_of(json.loads(summary.read_text()))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--preset", choices=("short", "standard"), default="short")
    args = parser.parse_args()
    started = datetime.now().astimezone()
    out = Path("results") / started.strftime("mimalloc-%Y%m%d-%H%M%S")
    default = load_profiles().default
    try:
        engine = docker_engine.prepare()
    except (docker_engine.EngineUnavailable, docker_engine.BuildFailed) as exc:
        sys.stderr.write(f"mimalloc: not made: {exc}\n")
        return 2
    rows: list[report.Row] = []
    try:
        build(engine)
        for pair in range(args.pairs):
            order = (default, CANDIDATE) if pair % 2 == 0 else (CANDIDATE, default)
            for profile in order:
                row = verify(profile, args.preset, out / f"{pair + 1}-{profile}")
                rows.append(dataclasses.replace(row, label=f"{profile} #{pair + 1}"))
                sys.stdout.write(report.render_text([rows[-1]]).splitlines()[-1] + "\n")
    except (docker_engine.BuildFailed, RuntimeError, subprocess.SubprocessError) as exc:
        sys.stderr.write(f"mimalloc: not made: {exc}\n")
        return 2
    finally:
        engine.stop()
    context = [
        "command: `python -m lab.mimalloc " + " ".join(sys.argv[1:]) + "`",
        f"image {TAG} under docker --memory=500m; preset {args.preset}; pairs in alternating "
        "order",
        f"started {started.isoformat(timespec='seconds')}",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "mimalloc.md").write_text(report.summary_markdown("mimalloc 3 against the default",
                                                             rows, context))  # fmt: skip
    sys.stdout.write(report.render_text(rows) + f"\nresults in {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
