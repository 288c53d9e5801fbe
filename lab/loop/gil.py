"""The mechanism alone, without the service: `python -m lab.loop.gil`.

``--threads`` threads run Python without pause (as worker threads validating and encoding a
bulk submission do) while the main thread, as an event loop does, makes a short blocking call
(a 0.2 ms ``select``, which gives the GIL up) again and again. Each call's time past its 0.2 ms
is the wait to take the GIL back. Measured A B A B at Python's 5 ms switch interval and at
1 ms, in one process; the p50 and p99 of the wait, per round.
"""

from __future__ import annotations

import argparse
import select
import sys
import threading
import time
from collections.abc import Sequence

from scripts.verify.core.percentile import percentile

CALL_S = 0.0002


def waits_ms(calls: int) -> list[float]:
    """The main thread's wait to retake the GIL after each of ``calls`` short blocking calls."""
    found = []
    for _ in range(calls):
        started = time.perf_counter()
        select.select([], [], [], CALL_S)
        found.append((time.perf_counter() - started - CALL_S) * 1000)
    return found


def measure(
    intervals_ms: Sequence[float], threads: int, rounds: int, calls: int
) -> dict[float, list[tuple[float, float]]]:
    """(p50, p99) of the wait in ms, per interval, one pair per round; the interval restored."""
    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(threads)]
    before = sys.getswitchinterval()
    found: dict[float, list[tuple[float, float]]] = {ms: [] for ms in intervals_ms}
    for spinner in spinners:
        spinner.start()
    try:
        for _ in range(rounds):
            for ms in intervals_ms:
                sys.setswitchinterval(ms / 1000)
                waits = waits_ms(calls)
                found[ms].append((percentile(waits, 0.5), percentile(waits, 0.99)))
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
        sys.setswitchinterval(before)
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.loop.gil", description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="threads running Python (2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, A B per round (3)")
    parser.add_argument("--calls", type=int, default=300, help="blocking calls per block (300)")
    args = parser.parse_args(argv)
    if args.threads < 0 or args.rounds < 1 or args.calls < 1:
        parser.error("--threads must be 0 or more, --rounds and --calls at least 1")
    found = measure((5.0, 1.0), args.threads, args.rounds, args.calls)
    sys.stdout.write(
        f"GIL wait after a {CALL_S * 1000:g} ms blocking call, {args.threads} "
        "thread(s) running Python; (p50, p99) ms per round\n"
    )
    for ms, pairs in found.items():
        cells = ", ".join(f"({p50:.1f}, {p99:.1f})" for p50, p99 in pairs)
        sys.stdout.write(f"switch interval {ms:g} ms: {cells}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
