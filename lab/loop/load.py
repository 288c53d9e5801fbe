"""The bulk load in a process of its own:
`python -m lab.loop.load HOST PORT PATH POSTS RECORDS AT_ONCE`.

Builds every body first (the load scenario's, lab/stack/bulk.py), says "ready", waits for a
line on stdin, then sends ``POSTS`` posts to ``PATH``, ``AT_ONCE`` in flight (a 503 waits out
its Retry-After and is sent again), and prints one JSON object: seconds, statuses, errors.
"""

from __future__ import annotations

import asyncio
import json
import sys

from lab.stack.bulk import bodies, bulk


def main(argv: list[str]) -> int:
    host, port, path = argv[0], int(argv[1]), argv[2]
    posts, records, at_once = int(argv[3]), int(argv[4]), int(argv[5])
    prepared = bodies(records)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    result = asyncio.run(bulk(host, port, posts, records, at_once, (path,), prepared))
    sys.stdout.write(
        json.dumps(
            {
                "seconds": result.seconds,
                "statuses": {str(k): v for k, v in result.statuses.items()},
                "errors": dict(result.errors),
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
