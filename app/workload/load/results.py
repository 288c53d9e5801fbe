"""The results a client was handed and reads back, and what a read-back answered 404 means.

The service keeps a submitted result for CACHE_TTL_SECONDS, or until its cache's bound evicts it,
and its 404 says which ("expired", "evicted"). Either is the cache working as promised. A 404
that names neither, for a result younger than the TTL, is state the service dropped: a worker
replaced (its cache went with it), or a read-back reaching a worker that never had the result.
Read-backs are reported under four names, so Locust's statistics count each kind. No Locust
import: the workload's load declaration hands the names to the verifier, which counts them.
"""

from __future__ import annotations

import random
from collections import OrderedDict

READ_NAME = "/bulk/[id]"
LOST_NAME = "/bulk/[id] lost"  # 404, neither expired nor evicted, inside the TTL
EXPIRED_NAME = "/bulk/[id] expired"  # 404 once the result had outlived its TTL
EVICTED_NAME = "/bulk/[id] evicted"  # 404 the service put down to its cache's bound
READBACK_NAMES = (READ_NAME, LOST_NAME, EXPIRED_NAME, EVICTED_NAME)
GONE_WORDS = {"expired": EXPIRED_NAME, "evicted": EVICTED_NAME}  # in the 404's detail
# The client's clock starts when the reply arrives; the service's started a little earlier, when
# it stored the result. A 404 this close to the TTL is counted as expired, not lost.
CLOCK_MARGIN_SECONDS = 1.0


class KeptResults:
    """The ids a client remembers (the newest ``keep``) and when each was handed to it."""

    def __init__(self, keep: int, ttl_seconds: float) -> None:
        self.keep = keep
        self.ttl_seconds = ttl_seconds
        self._received: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._received)

    def add(self, submission: str, now: float) -> None:
        self._received[submission] = now
        while len(self._received) > self.keep:
            self._received.popitem(last=False)

    def pick(self, rng: random.Random) -> str:
        return rng.choice(list(self._received))

    def gone(self, submission: str, now: float, detail: str = "") -> str:
        """Forget a result the service answered 404 for; the name to report that read-back as.

        ``detail`` is the 404's own reason; one naming neither word is judged by age."""
        received = self._received.pop(submission, now)
        said = next((name for word, name in GONE_WORDS.items() if word in detail), None)
        if said is not None:
            return said
        young = now - received < self.ttl_seconds - CLOCK_MARGIN_SECONDS
        return LOST_NAME if young else EXPIRED_NAME
