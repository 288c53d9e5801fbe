"""The one percentile every tool and instrument reports: the nearest rank.

The smallest value with at least ``share`` of the values at or below it, so a p99 is always a
latency that was really observed (no interpolation between two requests that both happened).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], share: float) -> float:
    """Nearest rank; ValueError for no values or a share outside (0, 1]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < share <= 1:
        raise ValueError(f"share {share} is not in (0, 1]")
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]


def percentile_or_none(values: Iterable[float], share: float) -> float | None:
    """The same, None where nothing was observed (a table shows it as n/a)."""
    ordered = list(values)
    return percentile(ordered, share) if ordered else None
