"""The /healthz probe in a process of its own: `python -m lab.loop.probe HOST PORT INTERVAL_MS`.

A probe thread inside the load's process would share that process's GIL with the load and
measure the client's stalls as well as the server's. This one runs lab/stall's probe (latency
counted from each probe's due time; its first few probes warm the connection and are not
timed) from its "ready" until a line arrives on stdin, then prints its latencies as one JSON
object on stdout.
"""

from __future__ import annotations

import json
import sys
import threading

from lab.stall.probe import Endpoint, HealthzProbe

MAX_PROBES = 10_000_000  # a bound the stop line always comes before


def main(argv: list[str]) -> int:
    host, port, interval_ms = argv[0], int(argv[1]), float(argv[2])
    probe = HealthzProbe(Endpoint(host, port, ""), MAX_PROBES, interval_ms / 1000)
    stop = threading.Event()
    thread = threading.Thread(target=probe.run, args=(stop,), name="healthz-probe")
    thread.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    stop.set()
    thread.join()
    record = probe.record
    sys.stdout.write(
        json.dumps(
            {
                "latencies_ms": [v * 1000 for v in record.latencies_s],
                "errors": record.errors,
                "last_error": record.last_error,
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
