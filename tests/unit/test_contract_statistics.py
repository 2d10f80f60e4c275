"""Interval statistics: known samples give the known mean and Student's t interval."""

from __future__ import annotations

import math
import statistics

import pytest

from w5xde.contract.statistics import SampleStats, t_quantile_975


def _stats(values: list[float]) -> SampleStats:
    stats = SampleStats()
    for value in values:
        stats = stats.add(value)
    return stats


def test_known_samples_give_the_known_interval() -> None:
    values = [10.0, 12.0, 9.0, 11.0, 13.0]  # mean 11, s = 1.5811, t(4) = 2.776
    stats = _stats(values)
    assert stats.count == 5
    assert stats.mean == pytest.approx(11.0)
    assert stats.stdev == pytest.approx(statistics.stdev(values))
    assert stats.ci95 == pytest.approx(2.776 * statistics.stdev(values) / math.sqrt(5))
    assert stats.ci95 == pytest.approx(1.963, abs=1e-3)
    assert (stats.min, stats.max) == (9.0, 13.0)


def test_running_stats_match_the_batch_formula_on_large_offsets() -> None:
    values = [1e9 + (index % 7) * 1e3 for index in range(1000)]
    stats = _stats(values)
    assert stats.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert stats.stdev == pytest.approx(statistics.stdev(values), rel=1e-9)


def test_one_sample_has_no_interval_and_survives_a_round_trip() -> None:
    stats = _stats([5.0])
    assert stats.ci95 == 0.0
    again = SampleStats.model_validate(stats.model_dump(by_alias=True))
    assert again == stats


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706), (10, 2.228), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)],
)
def test_t_quantiles(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, abs=1.5e-3)
