"""The stack subcommand: its order of runs, its ratios, its table and flags; and one real run of
both stacks on free ports with tiny settings."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.stack.command import COLUMNS, COMMAND, StackOptions, ratios, render
from lab.stack.run import Workloads
from lab.stack.serve import with_stack
from lab.stack.server import StackServer
from lab.stack.stacks import STACKS, Slot, Stack, schedule
from scripts.verify import cli
from scripts.verify.cli import standalone, standalone_parser
from scripts.verify.core.errors import RunNotMade

REPO_ROOT = Path(__file__).resolve().parents[2]


def figures(
    workload: str, stack: str, req_per_s: float, p99_ms: float | None, peak: float
) -> dict[str, object]:
    return {
        "workload": workload, "round": 1, "stack": stack, "seconds": 15.0, "requests": 100,
        "req_per_s": req_per_s, "p50_ms": 5.0, "p99_ms": p99_ms, "errors": 0,
        "rss_start_mb": 54.4, "rss_peak_mb": peak,
    }


def test_runs_interleave_the_stacks_round_by_round_within_each_workload() -> None:
    order = schedule(["light", "bulk"], 2, ["a", "b"])
    assert [(s.workload, s.round, s.stack) for s in order] == [
        ("light", 1, "a"), ("light", 1, "b"), ("light", 2, "a"), ("light", 2, "b"),
        ("bulk", 1, "a"), ("bulk", 1, "b"), ("bulk", 2, "a"), ("bulk", 2, "b"),
    ]


def test_ratios_are_means_of_each_stack_over_the_first_stacks_mean() -> None:
    runs = [
        figures("light", "h11-asyncio", 1000, 100, 60),
        figures("light", "httptools-uvloop", 1300, 80, 63),
        figures("light", "h11-asyncio", 1200, 140, 60),
        figures("light", "httptools-uvloop", 1340, 100, 63),
        figures("bulk", "h11-asyncio", 4, None, 150),
        figures("bulk", "httptools-uvloop", 5, 300, 165),
    ]
    assert ratios(runs, ["h11-asyncio", "httptools-uvloop"]) == [
        "light: httptools-uvloop / h11-asyncio, means of 2 and 2: "
        "req/s 1.20x, p99 0.75x, peak RSS 1.05x",
        "bulk: httptools-uvloop / h11-asyncio, means of 1 and 1: "
        "req/s 1.25x, p99 -, peak RSS 1.10x",
    ]


def test_the_table_has_a_cell_per_column_and_a_dash_where_nothing_was_measured() -> None:
    table = render([figures("bulk", "h11-asyncio", 1234.5, None, 150.0)])
    header, rule, line = table.splitlines()
    assert header.count("|") == rule.count("|") == line.count("|") == len(COLUMNS) + 1
    assert "| bulk | 1 | h11-asyncio | 15.0 | 100 | 1,234.5 | 5.0 | - | 0 |" in line


def test_the_served_command_line_differs_only_in_the_stack() -> None:
    argv = ["python", "-m", "uvicorn", "--loop", "asyncio", "--http", "h11", "--port", "1"]
    assert with_stack(argv, "httptools", "uvloop") == [
        "python", "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--port", "1",
    ]


def big_header_reply(port: int, header_bytes: int = 1024 * 1024) -> bytes:
    """The start of the reply to a GET /healthz carrying one header of ``header_bytes``."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(header_bytes // 16384):
                sock.sendall(b"A" * 16384)
            sock.sendall(b"\r\n\r\n")
            reply = sock.recv(64)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading: a bound at work
    return reply


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stack", "bounded"),
    [("h11-asyncio", True), ("h11-uvloop", True), ("httptools-uvloop", False)],
)
def test_only_the_h11_stacks_bound_a_request_head(
    stack: str, bounded: bool, tmp_path: Path
) -> None:
    for module in STACKS[stack].needs:
        pytest.importorskip(module)
    server = StackServer(STACKS[stack], tmp_path, tmp_path / "server.log").start()
    try:
        server.wait_healthy(60)
        reply = big_header_reply(server.port)
    finally:
        server.stop()
    assert reply.startswith(b"HTTP/1.1 200") is not bounded, reply


def test_a_stack_whose_modules_are_missing_is_a_run_not_made() -> None:
    with pytest.raises(RunNotMade, match="needs no_such_parser"):
        Stack("x", "no_such_parser", "asyncio", "x", ("no_such_parser",)).check_installed()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--stacks", "h11-asyncio"], "at least two different stacks"),
        (["--stacks", "h11-asyncio,h11-asyncio"], "at least two different stacks"),
        (["--stacks", "h11-asyncio,hyper"], "unknown stack or workload: hyper"),
        (["--workloads", "heavy"], "unknown stack or workload: heavy"),
        (["--rounds", "0"], "must be positive"),
        (["--seconds", "0"], "must be positive"),
        (["--bulk-at-once", "0"], "must be positive"),
    ],
)
def test_bad_flags_are_refused_with_what_is_wrong(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        standalone(COMMAND, "python -m lab.stack", argv)
    assert info.value.code == 2
    assert named in capsys.readouterr().err


def test_the_flags_become_typed_options_with_the_sizes_run_slot_takes() -> None:
    argv = ["--stacks", "h11-asyncio, h11-uvloop", "--workloads", "bulk", "--bulk-posts", "4"]
    args = standalone_parser(COMMAND, "python -m lab.stack").parse_args(argv)
    args.argv = argv
    options = COMMAND.parse(args)
    assert isinstance(options, StackOptions)
    assert (options.stacks, options.workloads) == (("h11-asyncio", "h11-uvloop"), ("bulk",))
    assert isinstance(options.sizes, Workloads) and options.sizes.bulk_posts == 4
    assert options.argv == tuple(argv) and options.output.out is None


def test_apart_from_the_user_tools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "stack" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in STACKS["httptools-uvloop"].needs),
    reason="httptools-uvloop needs httptools and uvloop",
)
def test_a_tiny_real_run_measures_both_stacks(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "lab.stack", "--rounds", "1", "--seconds", "2",
            "--connections", "8", "--bulk-posts", "4", "--bulk-at-once", "2",
            "--out", str(tmp_path),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "stack.json").read_text())["runs"]
    slots = [Slot(r["workload"], r["round"], r["stack"]) for r in runs]
    assert slots == schedule(["light", "bulk"], 1, ["h11-asyncio", "httptools-uvloop"])
    for figures_of_run in runs:
        assert figures_of_run["requests"] > 0 and figures_of_run["errors"] == 0
        assert figures_of_run["rss_peak_mb"] >= figures_of_run["rss_start_mb"] > 0
    assert "light: httptools-uvloop / h11-asyncio" in (tmp_path / "stack.md").read_text()
