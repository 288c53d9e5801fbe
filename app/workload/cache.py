"""The bulk results cache: TTL plus bounds on entries and bytes, values kept as bytes.

Values are stored serialized on purpose: a long-lived result kept as thousands of small Python
objects pins pymalloc arenas that no release can return, while one bytes object is a single
allocation the allocator can free whole.

The cache also remembers, for the last few drops, why a key went (expired or evicted), so a
404 can say which: a key it never held in this process is one a restart or another worker had.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Gone = Literal["expired", "evicted"]
# Reasons kept per entry the cache can hold: a client that remembers its last few results finds
# each one's reason while the cache has turned over a few times since (ids are ~100 B each).
REMEMBERED_PER_ENTRY = 4


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    evictions: int
    expirations: int


class BulkCache:
    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()  # the sync endpoints' threads and the loop share it
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._gone: OrderedDict[str, Gone] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self.expirations = 0

    def put(self, key: str, value: bytes) -> bool:
        """Store, evicting the oldest entries to fit; False if the value alone is too large."""
        if len(value) > self.max_bytes:
            return False
        with self._lock:
            self._drop(key)
            self._gone.pop(key, None)
            self._items[key] = (self._clock() + self.ttl, value)
            self._bytes += len(value)
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._items))
                self._drop(oldest, "evicted")
                self.evictions += 1
        return True

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= self._clock():
                self._drop(key, "expired")
                self.expirations += 1
                return None
            return value

    def purge_expired(self) -> int:
        """Drop every expired entry; the cleanup loop calls this before a release."""
        now = self._clock()
        with self._lock:
            expired = [key for key, (expires, _) in self._items.items() if expires <= now]
            for key in expired:
                self._drop(key, "expired")
            self.expirations += len(expired)
        return len(expired)

    def all_expired_at(self) -> float | None:
        """When every entry now held will have expired, on this cache's clock; None if empty.
        The TTL is the same for all and put() appends, so the newest entry is the last."""
        with self._lock:
            if not self._items:
                return None
            expires, _ = next(reversed(self._items.values()))
            return expires

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._items), self._bytes, self.evictions, self.expirations)

    def gone(self, key: str) -> Gone | None:
        """Why ``key`` is no longer held, if it was dropped recently; None if never held here."""
        with self._lock:
            return self._gone.get(key)

    def _drop(self, key: str, reason: Gone | None = None) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])
            if reason is not None:
                self._gone[key] = reason
                while len(self._gone) > REMEMBERED_PER_ENTRY * self.max_entries:
                    self._gone.popitem(last=False)
