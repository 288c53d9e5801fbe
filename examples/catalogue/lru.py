"""The catalogue's hot products: a bounded least-recently-used map with a time to live, as
services put in front of a database. Entries made during a spike sit scattered over the memory
the spike took; the TTL (CACHE_TTL_SECONDS, which the verifier shortens) lets them go, so what
stays afterwards is what the allocator kept, not data the service still serves from memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``capacity`` entries, each for ``ttl_seconds``, the least recently used dropped
    first; safe across the threadpool's threads."""

    def __init__(self, capacity: int, ttl_seconds: float) -> None:
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key -> (expiry, value)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl_seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def purge(self) -> int:
        """Drops the expired entries and says how many: the memory manager's cleanup hook, run
        before each release so that their memory can go back with it."""
        now = time.monotonic()
        with self._lock:
            expired = [key for key, (expiry, _) in self._entries.items() if expiry <= now]
            for key in expired:
                del self._entries[key]
        return len(expired)

    def expires_at(self) -> float | None:
        """When everything held now will have expired (None: nothing held), so the manager's
        loop wakes then."""
        with self._lock:
            return max((expiry for expiry, _ in self._entries.values()), default=None)

    def __len__(self) -> int:
        return len(self._entries)
