"""Hot copies of recent bulk results: TTL plus bounds on entries and bytes, values kept as bytes.

The results themselves are in the database (app/workload/store.py); a copy here spares recent
reads the trip, and dropping one, for a bound or its TTL, loses nothing.

Values are stored serialized on purpose: a long-lived result kept as thousands of small Python
objects pins pymalloc arenas that no release can return, while one bytes object is a single
allocation the allocator can free whole.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


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
        self._bytes = 0
        self.evictions = 0
        self.expirations = 0

    def put(self, key: str, value: bytes) -> bool:
        """Store, evicting the oldest entries to fit; False if the value alone is too large."""
        if len(value) > self.max_bytes:
            return False
        with self._lock:
            self._drop(key)
            self._items[key] = (self._clock() + self.ttl, value)
            self._bytes += len(value)
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._items))
                self._drop(oldest)
                self.evictions += 1
        return True

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= self._clock():
                self._drop(key)
                self.expirations += 1
                return None
            return value

    def purge_expired(self) -> int:
        """Drop every expired entry; the cleanup loop calls this before a release."""
        now = self._clock()
        with self._lock:
            expired = [key for key, (expires, _) in self._items.items() if expires <= now]
            for key in expired:
                self._drop(key)
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

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])
