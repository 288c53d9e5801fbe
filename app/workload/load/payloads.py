"""Bulk request bodies: made once per process per size, then sent as ready bytes.

The server and Locust share two cores here; encoding 20,000 records per request in the client
would make Locust the bottleneck and the spike smaller than the one being tested. No Locust
import: the workload's load declaration (app/workload/load/__init__.py) builds the verifier's
heavy bodies from it too.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# Seeded products are SKU-00000..SKU-04999; anything above is an unknown SKU the service counts.
KNOWN_SKUS = 5000
UNKNOWN_SHARE = 0.03
TAGS = ("promo", "bulk", "gift", "b2b", "repeat", "export", "fragile", "express", "sample")
WORDS = (
    "deliver",
    "before",
    "noon",
    "leave",
    "at",
    "door",
    "invoice",
    "monthly",
    "pallet",
    "boxes",
    "handle",
    "with",
    "care",
    "call",
    "on",
    "arrival",
    "reorder",
    "of",
    "last",
    "week",
    "rush",
)
# Bodies per size: a few variants so consecutive requests do not carry identical bytes.
VARIANTS = 2


class SizeSpecError(ValueError):
    """A bulk size list or think time that cannot be used; the message shows the accepted form."""


@dataclass(frozen=True)
class SizeBucket:
    records: int
    weight: float


# Skewed toward small: most clients send a few hundred lines, a few send the maximum
# (records:weight; MAX_BULK_RECORDS defaults to 20,000).
DEFAULT_SIZES = "200:55,1000:25,5000:14,20000:6"
# Seconds a client waits between requests (min,max).
DEFAULT_THINK = "0.5,2.5"


def parse_think(spec: str) -> tuple[float, float]:
    """(min, max) seconds from "min,max" (or one number for a fixed wait)."""
    low, _, high = spec.partition(",")
    try:
        bounds = float(low), float(high or low)
    except ValueError:
        raise SizeSpecError(f"think time {spec!r}: expected min,max seconds") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise SizeSpecError(f"think time {spec!r}: need 0 <= min <= max")
    return bounds


def parse_buckets(spec: str) -> tuple[SizeBucket, ...]:
    """Buckets from "records:weight,..." (e.g. "200:55,1000:25,5000:14,20000:6")."""
    buckets = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        records, _, weight = part.partition(":")
        try:
            bucket = SizeBucket(int(records), float(weight or 1))
        except ValueError:
            raise SizeSpecError(f"bulk sizes {spec!r}: expected records:weight,...") from None
        if bucket.records < 1 or bucket.weight <= 0:
            raise SizeSpecError(f"bulk sizes {spec!r}: records >= 1 and weight > 0 each")
        buckets.append(bucket)
    if not buckets:
        raise SizeSpecError(f"bulk sizes {spec!r}: no sizes given")
    return tuple(buckets)


def make_record(rng: random.Random) -> dict[str, object]:
    """One record valid for the service's schema, with the spread real orders have."""
    if rng.random() < UNKNOWN_SHARE:
        sku = rng.randrange(KNOWN_SKUS, 100_000)
    else:
        sku = rng.randrange(KNOWN_SKUS)
    note_words = rng.choice((0, 0, 3, 8, 16))
    return {
        "sku": f"SKU-{sku:05d}",
        "quantity": rng.choice((1, 1, 2, 3, 5, 10, 24, 100)),
        "unit_price": round(rng.uniform(0.5, 400.0), 2),
        "customer": f"c-{rng.randrange(5000)}",
        "tags": rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3))),
        "note": " ".join(rng.choice(WORDS) for _ in range(note_words)),
    }


@lru_cache(maxsize=64)
def body(records: int, variant: int = 0) -> bytes:
    """The JSON body of ``records`` records; deterministic, built once per process."""
    rng = random.Random(records * 1009 + variant)
    document = {"records": [make_record(rng) for _ in range(records)]}
    return json.dumps(document, separators=(",", ":")).encode()


class PayloadBank:
    """Picks a bucket by weight and hands out its prepared bytes."""

    def __init__(self, buckets: Sequence[SizeBucket] | None = None) -> None:
        self.buckets = tuple(buckets or parse_buckets(DEFAULT_SIZES))
        self._weights = [b.weight for b in self.buckets]

    def warm(self) -> None:
        """Build every body now, before users start, so no request waits on encoding."""
        for bucket in self.buckets:
            for variant in range(VARIANTS):
                body(bucket.records, variant)

    def pick(self, rng: random.Random) -> tuple[int, bytes]:
        bucket = rng.choices(self.buckets, weights=self._weights)[0]
        return bucket.records, body(bucket.records, rng.randrange(VARIANTS))

    def mean_records(self) -> float:
        total = sum(self._weights)
        return sum(b.records * b.weight for b in self.buckets) / total
