"""The product catalogue both stores seed (SQLite's file, PostgreSQL's tables): the same rows
on every machine, so a run here and one on Railway enrich the same submissions alike.

``ProductRow`` is a catalogue row as a store reads it; the API's ``models.Product`` is what a
client sees of it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import NamedTuple

PRODUCT_COUNT = 5000
CATEGORIES = ("books", "garden", "grocery", "hardware", "music", "office", "outdoor", "toys")


class ProductRow(NamedTuple):
    sku: str
    name: str
    category: str
    unit_weight_g: int
    tax_rate: float


def sku_for(index: int) -> str:
    return f"SKU-{index:05d}"


def seed_rows() -> Iterator[ProductRow]:
    rng = random.Random(20240601)  # the same catalogue on every machine
    for index in range(PRODUCT_COUNT):
        category = CATEGORIES[index % len(CATEGORIES)]
        yield ProductRow(
            sku_for(index),
            f"{category.title()} item {index}",
            category,
            rng.randint(20, 5000),
            rng.choice((0.0, 0.07, 0.19)),
        )
