"""The one percentile: nearest rank, on fixed values."""

from __future__ import annotations

import pytest

from scripts.verify.core.percentile import percentile, percentile_or_none


def test_percentile_is_the_nearest_rank_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # order of input does not matter


@pytest.mark.parametrize("share", [0.0, 1.5, -0.1])
def test_percentile_rejects_shares_outside_zero_to_one(share: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], share)


def test_no_values_is_an_error_or_none_as_asked() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)
    assert percentile_or_none([], 0.99) is None
    assert percentile_or_none([2.0, 1.0], 0.5) == 1.0
