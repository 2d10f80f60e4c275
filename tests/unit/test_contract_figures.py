"""The shared fold of worker reports into cluster figures (the operator's and `w5xde local`'s):
rounding as published, the ratio and rate guards, field-wise counters, nearest-rank p50."""

from __future__ import annotations

from w5xde.api.v1alpha1 import Spread, Totals
from w5xde.contract.figures import (
    ClusterFigures,
    add_totals,
    at_least,
    compression_ratio,
    fold_reports,
    format_throughput,
    minus_floored,
    percentile,
    run_averages,
    spread_of,
    totals_of,
)
from w5xde.contract.report import WorkerReport


def test_compression_ratio_has_two_decimals_and_is_zero_when_nothing_crossed_the_wire() -> None:
    assert compression_ratio(2, 3) == 0.67
    assert compression_ratio(3, 1) == 3.0  # one byte on the wire is a ratio, not "nothing"
    assert compression_ratio(5, 0) == 0.0
    assert compression_ratio(0, 0) == 0.0


def test_throughput_is_in_decimal_megabytes_rounded_to_a_tenth() -> None:
    assert format_throughput(10**12) == "1000000.0 MB/s"
    assert format_throughput(12_350_001) == "12.4 MB/s"
    assert format_throughput(49_999) == "0.0 MB/s"


def test_counters_combine_field_by_field() -> None:
    left = Totals(batches=7, raw_bytes=700, wire_bytes=300, lost_batches=1, resent_batches=4)
    right = Totals(batches=5, raw_bytes=900, wire_bytes=300, corrupt_batches=2, resent_batches=1)
    assert add_totals(left, right) == Totals(
        batches=12, raw_bytes=1600, wire_bytes=600, lost_batches=1, corrupt_batches=2,
        resent_batches=5,
    )  # fmt: skip
    assert at_least(left, right) == Totals(
        batches=7, raw_bytes=900, wire_bytes=300, lost_batches=1, corrupt_batches=2,
        resent_batches=4,
    )  # fmt: skip
    # A run's own counters: never negative, and exactly zero where nothing moved.
    assert minus_floored(left, right) == Totals(batches=2, lost_batches=1, resent_batches=3)
    assert minus_floored(right, right) == Totals()


def test_totals_of_reports_sums_every_counter() -> None:
    reports = [
        WorkerReport(name="a", batches=1, raw_bytes=10, wire_bytes=4, lost_batches=1),
        WorkerReport(name="b", batches=2, raw_bytes=20, wire_bytes=8, corrupt_batches=3),
    ]
    assert totals_of(reports) == Totals(
        batches=3, raw_bytes=30, wire_bytes=12, lost_batches=1, corrupt_batches=3
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(value) for value in range(1, 11)]
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.9) == 9.0
    assert percentile(values, 0.01) == 1.0
    assert percentile(values, 1.0) == 10.0
    assert percentile([], 0.5) == 0.0


def test_spread_is_rounded_to_a_tenth() -> None:
    assert spread_of([3.14159, 1.41421, 2.71828]) == Spread(
        min_bytes_per_second=1.4, p50_bytes_per_second=2.7, max_bytes_per_second=3.1
    )
    assert spread_of([]) == Spread()


def test_fold_sums_rates_averages_seconds_and_rounds_as_published() -> None:
    reports = [
        WorkerReport(
            name="a",
            throughput_bytes_per_second=100.04,
            wire_bytes_per_second=10.06,
            batches_per_second=1.26,
            network_seconds=1.111,
            compression_seconds=0.5,
            rss_bytes=70,
            batches=3,
            raw_bytes=30,
            wire_bytes=9,
        ),
        WorkerReport(
            name="b",
            throughput_bytes_per_second=0.03,
            wire_bytes_per_second=10.01,
            batches_per_second=1.01,
            network_seconds=2.222,
            compression_seconds=0.123,
            rss_bytes=90,
            batches=4,
            raw_bytes=40,
            wire_bytes=11,
            lost_batches=1,
        ),
    ]
    assert fold_reports(reports) == ClusterFigures(
        throughput_bytes_per_second=100.1,
        wire_bytes_per_second=20.1,
        batches_per_second=2.3,
        compression_ratio=4.99,  # of the unrounded sums: 100.07 / 20.07
        network_seconds=1.67,
        compression_seconds=0.31,
        memory_bytes=90,
        spread=Spread(
            min_bytes_per_second=0.0, p50_bytes_per_second=0.0, max_bytes_per_second=100.0
        ),
        totals=Totals(batches=7, raw_bytes=70, wire_bytes=20, lost_batches=1),
    )
    assert fold_reports([]) == ClusterFigures()


def test_run_averages_are_counters_over_the_run_length_rounded_to_a_tenth() -> None:
    totals = Totals(batches=7, raw_bytes=1000, wire_bytes=334)
    assert run_averages(totals, 3.0) == ClusterFigures(
        throughput_bytes_per_second=333.3,
        wire_bytes_per_second=111.3,
        batches_per_second=2.3,
        compression_ratio=2.99,
        totals=totals,
    )
    half = run_averages(totals, 0.5)
    assert (half.throughput_bytes_per_second, half.batches_per_second) == (2000.0, 14.0)


def test_a_run_of_no_length_is_averaged_over_one_second() -> None:
    totals = Totals(batches=7, raw_bytes=1000, wire_bytes=500)
    for seconds in (0.0, -3.0):
        figures = run_averages(totals, seconds)
        assert figures.throughput_bytes_per_second == 1000.0
        assert figures.wire_bytes_per_second == 500.0
        assert figures.batches_per_second == 7.0
