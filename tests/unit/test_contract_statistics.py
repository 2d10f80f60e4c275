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


def test_the_table_holds_up_to_30_degrees_of_freedom() -> None:
    assert t_quantile_975(30) == 2.042  # the table's last entry, not the expansion (2.04227)
    with pytest.raises(ValueError, match=r"^degrees of freedom must be at least 1$"):
        t_quantile_975(0)


# Exact quantiles t(0.975, df) (scipy.stats.t.ppf, or bisection on the regularized
# incomplete beta function): beyond the table the four-term Cornish-Fisher expansion is
# within 2e-6 of them (1.73e-6 at 31 df, its worst case, then falling as df**-4).
EXACT_T975 = {
    31: 2.039513446,
    40: 2.021075390,
    60: 2.000297822,
    120: 1.979930405,
    1000: 1.962339081,
}


@pytest.mark.parametrize(("df", "exact"), sorted(EXACT_T975.items()))
def test_beyond_the_table_the_expansion_is_within_2e_6_of_the_exact_quantile(
    df: int, exact: float
) -> None:
    assert t_quantile_975(df) == pytest.approx(exact, abs=2e-6)


def test_min_and_max_follow_the_samples_in_any_order_and_sign() -> None:
    falling = _stats([13.0, 9.0])
    assert (falling.min, falling.max) == (9.0, 13.0)
    negative = _stats([-5.0])
    assert (negative.min, negative.max, negative.mean) == (-5.0, -5.0, -5.0)
