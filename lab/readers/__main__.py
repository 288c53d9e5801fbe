"""What a slow reader costs, part by part; and whether a fast reader is as fast as before.

  python -m lab.readers split [--readers 1000] [--seconds 30] [--set VAR=VALUE ...]
  python -m lab.readers fast --before DIR [--reads 40] [--send-buffer-kb 0]

``split`` runs the verifier's slow-reader level (scripts/verify/overload/slowread.py: a 500 MB
cgroup, the default profile, 30 s, the cgroup's growth per connection) four times, the
connections asking for less each time than the next: nothing (connected, silent), /healthz (a
route answered on the event loop), a stored result that does not exist (a small 404 from the
synchronous route), and the stored results themselves (the level as the verifier runs it). The
differences are what the connection, a request inside the app and a large reply each add.

``fast`` serves this checkout and the one at ``--before`` side by side, stores one result of
the verifier's large body in each, and reads it whole from each in turn (A B, then B A), on a
fresh connection per read, from this process: the two servers' medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx

from scripts.verify.core.declared import readable
from scripts.verify.core.errors import EXIT_NOT_MADE, EXIT_PASS, RunNotMade
from scripts.verify.core.local import LocalServer
from scripts.verify.overload.run import large_body
from scripts.verify.overload.slowread import SlowReadSettings, run_slow_readers, store_results

PROFILE = "jemalloc-nopymalloc"
MISSING_ID = "0" * 32


@dataclass(frozen=True)
class Part:
    name: str
    growth_mb: float
    per_connection_kb: float
    health_share: float
    oom_kills: int | None


def plan() -> list[tuple[str, int, list[str] | None]]:
    """Each part's name, the requests each connection sends (0: none) and the paths it asks for
    (None: the stored results), each asking for more than the one before."""
    return [
        ("connected, silent", 0, ["/healthz"]),
        ("GET /healthz", 1, ["/healthz"]),
        ("GET a missing result (404)", 1, [readable().result_of(MISSING_ID)]),
        ("GET a stored result", 1, None),
    ]


def split(readers: int, seconds: float, overrides: dict[str, str], out: Path) -> list[Part]:
    """The four runs, the cheapest first."""
    body = large_body()
    parts = []
    for name, pipelined, paths in plan():
        sys.stderr.write(f"readers: {readers} connections, {name}\n")
        settings = SlowReadSettings(
            readers=readers, seconds=seconds, pipelined=pipelined, overrides=overrides
        )
        run = run_slow_readers(PROFILE, settings, body, out, paths)
        parts.append(
            Part(name, round(run.growth_bytes / 2**20, 1), round(run.per_reader_bytes / 1024, 1),
                 round(run.health_share, 3), run.oom_kills)
        )  # fmt: skip
    return parts


def _server(checkout: Path | None, send_buffer_kb: int, body: bytes) -> tuple[LocalServer, str]:
    work = Path(tempfile.mkdtemp(prefix="lab-readers-"))
    overrides = {"ACCESS_LOG": "0", "SEND_BUFFER_KB": str(send_buffer_kb)}
    if checkout is not None:
        overrides["PYTHONPATH"] = str(checkout.resolve())
    server = LocalServer(
        PROFILE, work, work / "server.log", cleanup_interval_seconds=60,
        cache_ttl_seconds=600, limit_mb=500, overrides=overrides,
    )  # fmt: skip
    server.start()
    server.wait_healthy(60)
    [result_id] = store_results(server.base_url, body, 1)
    return server, readable().result_of(result_id)


def fast(before: Path, reads: int, send_buffer_kb: int) -> dict[str, object]:
    """Whole reads of one result, the two servers in turn; seconds per read, each server's."""
    body = large_body()
    sides: dict[str, tuple[LocalServer, str]] = {}
    took: dict[str, list[float]] = {"before": [], "after": []}
    try:
        sides["before"] = _server(before, send_buffer_kb, body)
        sides["after"] = _server(None, send_buffer_kb, body)
        for i in range(reads):
            for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                server, path = sides[side]
                with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
                    started = time.perf_counter()
                    reply = client.get(path)
                    took[side].append(time.perf_counter() - started)
                if reply.status_code != 200 or len(reply.content) < len(body):
                    raise RunNotMade(f"{side}: a read got {reply.status_code}, "
                                     f"{len(reply.content)} bytes")  # fmt: skip
    finally:
        for server, _ in sides.values():
            server.stop()
    medians = {side: statistics.median(t) for side, t in took.items()}
    return {
        "reads": reads,
        "send_buffer_kb": send_buffer_kb,
        "median_ms": {side: round(1000 * m, 1) for side, m in medians.items()},
        "min_ms": {side: round(1000 * min(t), 1) for side, t in took.items()},
        "after_over_before": round(medians["after"] / medians["before"], 3),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.readers", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("split", help="what a connection, a request and a reply each add")
    s.add_argument("--readers", type=int, default=1000)
    s.add_argument("--seconds", type=float, default=SlowReadSettings().seconds)
    s.add_argument("--set", action="append", default=[], metavar="VAR=VALUE")
    f = sub.add_parser("fast", help="a fast reader's whole read, this checkout against another")
    f.add_argument("--before", type=Path, required=True, help="the other checkout")
    f.add_argument("--reads", type=int, default=40)
    f.add_argument("--send-buffer-kb", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="results/readers-<timestamp>/")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out = args.out or Path("results") / datetime.now().strftime("readers-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.mode == "split":
            overrides = dict(item.split("=", 1) for item in args.set)
            parts = split(args.readers, args.seconds, overrides, out)
            found: object = [asdict(part) for part in parts]
        else:
            found = fast(args.before, args.reads, args.send_buffer_kb)
    except RunNotMade as exc:
        sys.stderr.write(f"readers: run not made: {exc}\n")
        return EXIT_NOT_MADE
    text = json.dumps({"command": ["python", "-m", "lab.readers", *argv], "found": found}, indent=1)
    (out / "readers.json").write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
