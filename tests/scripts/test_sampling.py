"""Sampling a real process tree, and the sampler's bookkeeping (without its clock thread)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from app.memory.measure import MB
from scripts.verify.core.sampling import (
    Clock,
    ExitCensus,
    Sample,
    Sampler,
    exited_during,
    tree_sample,
)

# A parent holding 60 MB that starts a child holding 40 MB; each says "ready" once its memory
# is touched, then both wait for stdin to close.
TREE = """
import subprocess, sys
held = bytearray(60 * 1024 * 1024)
child = subprocess.Popen([sys.executable, "-c",
    "import sys; held = bytearray(40 * 1024 * 1024); print('ready', flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print("ready", flush=True)
sys.stdin.read()
child.stdin.close()
child.wait()
"""

# A parent that replaces its one child each time a line arrives on stdin, as a server replaces
# a worker it recycles; "ready" once the new child runs.
REPLACING = """
import subprocess, sys
def start():
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
child = start()
print("ready", flush=True)
for _ in sys.stdin:
    child.stdin.close()
    child.wait()
    child = start()
    print("ready", flush=True)
child.stdin.close()
child.wait()
"""


def started(script: str) -> Iterator[subprocess.Popen[str]]:
    """``script`` running until it says "ready"; its stdin closed (so it ends) afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[str]]:
    yield from started(TREE)


def test_a_tree_sample_sums_the_parent_and_its_children(tree: subprocess.Popen[str]) -> None:
    sample = tree_sample(tree.pid, t=1.5)
    assert sample.processes == 2
    assert sample.t == 1.5
    # 100 MB held between them, plus two interpreters; 10% tolerance below for page rounding.
    assert sample.rss_bytes is not None and sample.rss_bytes >= 0.9 * 100 * MB
    assert sample.uss_bytes is not None and sample.pss_bytes is not None
    assert sample.uss_bytes <= sample.pss_bytes <= sample.rss_bytes
    alone = psutil.Process(tree.pid).memory_info().rss
    assert sample.rss_bytes > alone


def test_a_gone_root_raises_no_such_process() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(psutil.NoSuchProcess):
        tree_sample(gone.pid, t=0.0)


def test_the_sampler_keeps_samples_and_counts_probe_errors() -> None:
    outcomes: list[object] = [[Sample(t=0.0, rss_bytes=1)], OSError("refused"), []]

    def probe(t: float) -> list[Sample]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[return-value]

    sampler = Sampler(probe, Clock())
    for _ in range(3):
        sampler.sample_now()
    assert [s.rss_bytes for s in sampler.snapshot()] == [1]
    assert sampler.errors == 1 and sampler.last_error == "refused"
    assert sampler.latest() == Sample(t=0.0, rss_bytes=1)


def test_the_cgroup_metric_prefers_the_working_set() -> None:
    both = Sample(t=0, cgroup_usage_bytes=300, cgroup_working_set_bytes=200)
    usage_only = Sample(t=0, cgroup_usage_bytes=300)
    assert both.value("cgroup") == 200
    assert usage_only.value("cgroup") == 300
    assert Sample(t=0).value("pss") is None


@pytest.fixture
def replacing() -> Iterator[subprocess.Popen[str]]:
    yield from started(REPLACING)


def _replace_child(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("next\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "ready"


def test_a_replaced_child_is_counted_once(replacing: subprocess.Popen[str]) -> None:
    census = ExitCensus()
    samples = [tree_sample(replacing.pid, t=0.0, census=census)]
    _replace_child(replacing)
    samples += [tree_sample(replacing.pid, t=t, census=census) for t in (1.0, 2.0)]
    _replace_child(replacing)
    samples.append(tree_sample(replacing.pid, t=3.0, census=census))
    assert [s.processes_exited for s in samples] == [0, 1, 1, 2]
    assert all(s.processes == 2 for s in samples)
    assert exited_during(samples) == 2
    assert exited_during(samples[1:3]) == 0  # counted from the first sample given


def test_a_tree_that_keeps_its_processes_counts_no_exit(tree: subprocess.Popen[str]) -> None:
    census = ExitCensus()
    samples = [tree_sample(tree.pid, t=t, census=census) for t in (0.0, 1.0, 2.0)]
    assert exited_during(samples) == 0
    assert exited_during([Sample(t=0.0)]) is None  # not counted (a remote service)
