"""The bulk cache: TTL, entry and byte bounds, purge, and shared use from threads."""

from __future__ import annotations

import random
import threading

from app.workload.cache import BulkCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_value_lives_until_its_ttl() -> None:
    clock = FakeClock()
    cache = BulkCache(ttl_seconds=60, max_entries=10, max_bytes=1000, clock=clock)
    assert cache.put("a", b"payload")
    clock.now += 59.999
    assert cache.get("a") == b"payload"
    clock.now += 0.001
    assert cache.get("a") is None  # expired exactly at the TTL
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.expirations) == (0, 0, 1)


def test_put_again_replaces_and_restarts_the_ttl() -> None:
    clock = FakeClock()
    cache = BulkCache(60, 10, 1000, clock=clock)
    cache.put("a", b"x" * 100)
    clock.now += 50
    cache.put("a", b"y" * 10)
    clock.now += 50
    assert cache.get("a") == b"y" * 10
    assert cache.stats().bytes == 10
    assert cache.evictions == 0


def test_entry_bound_evicts_the_oldest() -> None:
    cache = BulkCache(60, max_entries=2, max_bytes=1000, clock=FakeClock())
    for key in ("a", "b", "c"):
        assert cache.put(key, key.encode())
    assert [cache.get(k) for k in ("a", "b", "c")] == [None, b"b", b"c"]
    assert (cache.stats().entries, cache.evictions) == (2, 1)


def test_byte_bound_evicts_until_it_fits() -> None:
    cache = BulkCache(60, max_entries=100, max_bytes=100, clock=FakeClock())
    cache.put("a", b"a" * 40)
    cache.put("b", b"b" * 40)
    cache.put("c", b"c" * 70)  # needs both older entries gone
    assert [cache.get(k) is not None for k in ("a", "b", "c")] == [False, False, True]
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (1, 70, 2)


def test_oversize_value_is_refused_and_evicts_nothing() -> None:
    cache = BulkCache(60, max_entries=10, max_bytes=100, clock=FakeClock())
    cache.put("keep", b"k" * 60)
    assert cache.put("big", b"x" * 101) is False
    assert cache.get("big") is None
    assert cache.get("keep") == b"k" * 60
    assert cache.put("exact", b"e" * 100) is True  # exactly the bound fits


def test_purge_expired_counts_what_it_dropped() -> None:
    clock = FakeClock()
    cache = BulkCache(60, 10, 1000, clock=clock)
    cache.put("old1", b"1")
    cache.put("old2", b"22")
    clock.now += 30
    cache.put("new", b"333")
    clock.now += 30
    assert cache.purge_expired() == 2
    assert cache.purge_expired() == 0
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.expirations) == (1, 3, 2)


def test_all_expired_at_is_the_newest_entrys_expiry() -> None:
    clock = FakeClock()
    cache = BulkCache(ttl_seconds=60, max_entries=10, max_bytes=1000, clock=clock)
    assert cache.all_expired_at() is None
    cache.put("a", b"1")
    clock.now += 10
    cache.put("b", b"2")
    assert cache.all_expired_at() == 1070.0
    clock.now += 5
    cache.put("a", b"3")  # written again: now the newest
    assert cache.all_expired_at() == 1075.0
    clock.now = 1075.0
    assert cache.purge_expired() == 2
    assert cache.all_expired_at() is None


def test_threads_keep_the_books_straight() -> None:
    cache = BulkCache(ttl_seconds=3600, max_entries=50, max_bytes=20_000)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                key = f"k{rng.randrange(200)}"
                if rng.random() < 0.6:
                    cache.put(key, bytes(rng.randrange(1, 800)))
                elif rng.random() < 0.9:
                    value = cache.get(key)
                    assert value is None or len(value) < 800
                else:
                    cache.purge_expired()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = cache.stats()
    assert stats.entries <= 50
    assert stats.bytes <= 20_000
    # The byte count must equal what is really stored.
    assert stats.bytes == sum(len(value) for _, value in cache._items.values())
