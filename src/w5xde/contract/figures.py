"""The one fold of worker reports into cluster figures, for the operator and `w5xde local`.

Pure and cheap (linear in the number of reports): the operator runs it once per
cluster per interval over up to 1,000 reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from w5xde.api.v1alpha1 import Spread, Totals
from w5xde.contract.report import WorkerReport


@dataclass(frozen=True)
class ClusterFigures:
    """What a cluster moved: rates summed over workers, per-worker seconds averaged."""

    throughput_bytes_per_second: float = 0.0
    wire_bytes_per_second: float = 0.0
    batches_per_second: float = 0.0
    compression_ratio: float = 0.0
    network_seconds: float = 0.0
    compression_seconds: float = 0.0
    #: Process CPU per GB received over the workers' rate windows (each worker's figure
    #: weighted by what it received), and of it the codec's and TLS's.
    cpu_seconds_per_gb: float = 0.0
    compression_cpu_seconds_per_gb: float = 0.0
    tls_cpu_seconds_per_gb: float = 0.0
    memory_bytes: int = 0
    spread: Spread = field(default_factory=Spread)
    totals: Totals = field(default_factory=Totals)


def compression_ratio(raw_bytes: float, wire_bytes: float) -> float:
    """Raw over wire bytes, 2 decimals; 0 when nothing crossed the wire."""
    return round(raw_bytes / wire_bytes, 2) if wire_bytes > 0 else 0.0


def format_throughput(bytes_per_second: float) -> str:
    """Decimal megabytes, the unit of the seed's figures ("212.4 MB/s")."""
    return f"{bytes_per_second / 1e6:.1f} MB/s"


_COUNTERS = tuple(Totals.model_fields)


def totals_of(reports: Iterable[WorkerReport]) -> Totals:
    """The counters of `reports` summed (a report carries every Totals field)."""
    listed = list(reports)
    return Totals(**{name: sum(getattr(report, name) for report in listed) for name in _COUNTERS})


def _fieldwise(left: Totals, right: Totals, combine: Callable[[int, int], int]) -> Totals:
    return Totals(
        **{name: combine(getattr(left, name), getattr(right, name)) for name in _COUNTERS}
    )


def add_totals(left: Totals, right: Totals) -> Totals:
    return _fieldwise(left, right, lambda a, b: a + b)


def at_least(floor: Totals, value: Totals) -> Totals:
    """Field-wise maximum: how `totals` is kept from ever going backwards."""
    return _fieldwise(floor, value, max)


def minus_floored(left: Totals, right: Totals) -> Totals:
    """Field-wise `left - right`, never below zero."""
    return _fieldwise(left, right, lambda a, b: max(0, a - b))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def spread_of(rates: Iterable[float]) -> Spread:
    ordered = sorted(rates)
    if not ordered:
        return Spread()
    return Spread(
        min_bytes_per_second=round(ordered[0], 1),
        p50_bytes_per_second=round(percentile(ordered, 0.5), 1),
        max_bytes_per_second=round(ordered[-1], 1),
    )


def fold_reports(reports: Sequence[WorkerReport]) -> ClusterFigures:
    """Live figures from fresh reports: rates of their last interval, counters summed."""
    count = len(reports)
    if count == 0:
        return ClusterFigures()
    throughput = sum(report.throughput_bytes_per_second for report in reports)
    wire = sum(report.wire_bytes_per_second for report in reports)
    return ClusterFigures(
        throughput_bytes_per_second=round(throughput, 1),
        wire_bytes_per_second=round(wire, 1),
        batches_per_second=round(sum(report.batches_per_second for report in reports), 1),
        compression_ratio=compression_ratio(throughput, wire),
        network_seconds=round(sum(report.network_seconds for report in reports) / count, 2),
        compression_seconds=round(sum(report.compression_seconds for report in reports) / count, 2),
        cpu_seconds_per_gb=_weighted(reports, lambda report: report.cpu_seconds_per_gb),
        compression_cpu_seconds_per_gb=_weighted(
            reports, lambda report: report.compression_cpu_seconds_per_gb
        ),
        tls_cpu_seconds_per_gb=_weighted(reports, lambda report: report.tls_cpu_seconds_per_gb),
        memory_bytes=max(report.rss_bytes for report in reports),
        spread=spread_of(report.throughput_bytes_per_second for report in reports),
        totals=totals_of(reports),
    )


def _weighted(reports: Sequence[WorkerReport], value: Callable[[WorkerReport], float]) -> float:
    """`value` per GB received, weighted by each worker's received rate: the cluster's
    CPU seconds per second over its GB per second (3 decimals; 0 when nothing arrived)."""
    received = sum(report.throughput_bytes_per_second for report in reports)
    if received <= 0:
        return 0.0
    weighted = sum(value(report) * report.throughput_bytes_per_second for report in reports)
    return round(weighted / received, 3)


def run_averages(totals: Totals, seconds: float) -> ClusterFigures:
    """A finished run's figures: its counters over its length, not the idle last interval."""
    seconds = seconds if seconds > 0 else 1.0
    return ClusterFigures(
        throughput_bytes_per_second=round(totals.raw_bytes / seconds, 1),
        wire_bytes_per_second=round(totals.wire_bytes / seconds, 1),
        batches_per_second=round(totals.batches / seconds, 1),
        compression_ratio=compression_ratio(totals.raw_bytes, totals.wire_bytes),
        totals=totals,
    )
