"""What `w5xde local` shows: a live view while it runs, and the result's tables.

rich renders both (the plugin's tables use it too); printed to a pipe or a file the
tables are plain text without borders, one row per line, so scripts can read them.
"""

from __future__ import annotations

import io
import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from w5xde.contract.figures import compression_ratio, fold_reports
from w5xde.contract.report import ReportLine
from w5xde.contract.results import Outcome, RunResult, SampleSet

#: Wide enough that no table wraps when printed to a pipe.
PLAIN_WIDTH = 200


def live_view(lines: list[ReportLine | None], started: float) -> Table:
    """The run so far: the cluster's rates and each worker's."""
    reports = [line.report for line in lines if line is not None]
    figures = fold_reports(reports)
    table = Table(
        title=(
            f"w5xde local  {time.monotonic() - started:5.1f} s  "
            f"{figures.throughput_bytes_per_second / 1e6:8.1f} MB/s  "
            f"{figures.batches_per_second:9.0f} batches/s  ratio "
            f"{compression_ratio(figures.totals.raw_bytes, figures.totals.wire_bytes):.2f}x"
        ),
        title_justify="left",
    )
    for name in ("worker", "MB/s", "batches/s", "batches", "lost", "corrupt", "RSS MB"):
        table.add_column(name, justify="left" if name == "worker" else "right")
    for report in reports:
        table.add_row(
            report.name,
            f"{report.throughput_bytes_per_second / 1e6:.1f}",
            f"{report.batches_per_second:.0f}",
            str(report.batches),
            str(report.lost_batches),
            str(report.corrupt_batches),
            f"{report.rss_bytes / 1e6:.1f}",
        )
    return table


def result_view(result: RunResult) -> Group:
    """The seed's figures, total, per worker and per link, and the expectations."""
    figures = result.figures
    summary = Table.grid(padding=(0, 2))
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_column()
    rows = [
        (
            "throughput",
            f"{figures.throughput_bytes_per_second / 1e6:.2f}",
            f"MB/s raw, {figures.wire_bytes_per_second / 1e6:.2f} MB/s on the wire",
        ),
        ("batches", str(figures.batches), f"({figures.batches_per_second:.0f}/s)"),
        ("ratio", f"{figures.compression_ratio:.2f}", "x"),
        ("network", f"{figures.network_seconds_per_worker:.2f}", "s per worker"),
        ("compression", f"{figures.compression_seconds_per_worker:.2f}", "s per worker"),
        (
            "CPU",
            f"{figures.cpu.cpu_seconds_per_gb:.2f}",
            f"s per GB ({figures.cpu.compression_cpu_seconds_per_gb:.2f} compression, "
            f"{figures.cpu.tls_cpu_seconds_per_gb:.2f} TLS, "
            f"{figures.cpu.other_cpu_seconds_per_gb:.2f} other)",
        ),
        ("max RSS", f"{figures.rss_max_bytes / 1e6:.1f}", "MB"),
        (
            "lost/corrupt/resent",
            f"{figures.lost_batches}/{figures.corrupt_batches}/{figures.resent_batches}",
            "",
        ),
        ("TCP retransmits", str(figures.tcp_retransmitted_segments), "segments"),
    ]
    for row in rows:
        summary.add_row(*row)
    workers = _plain_table(
        "worker", "MB/s", "batches", "batches/s", "ratio", "net s", "comp s", "CPU s/GB",
        "RSS MB", "lost", "corr", "resent",
    )  # fmt: skip
    for node in result.workers:
        workers.add_row(
            node.name,
            f"{node.throughput_bytes_per_second / 1e6:.2f}",
            str(node.batches),
            f"{node.batches_per_second:.0f}",
            f"{node.compression_ratio:.2f}",
            f"{node.network_seconds:.2f}",
            f"{node.compression_seconds:.2f}",
            f"{node.cpu.cpu_seconds_per_gb:.2f}",
            f"{node.rss_max_bytes / 1e6:.1f}",
            str(node.lost_batches),
            str(node.corrupt_batches),
            str(node.resent_batches),
        )
    ended = "" if result.outcome is Outcome.COMPLETE else f", {result.outcome}: {result.reason}"
    parts: list[Any] = [
        f"w5xde local: {figures.workers} workers, {figures.seconds:.1f} s{ended}",
        summary,
        "",
        workers,
    ]
    if result.links:
        links = _plain_table(
            "from", "to", "raw MB/s", "wire MB/s", "batches/s", "lost", "resent",
            "RTT p50 ms", "RTT p99 ms", "retrans", "srtt ms", "shared node", names=2,
        )  # fmt: skip
        for link in result.links:
            links.add_row(
                link.sender,
                link.receiver,
                f"{link.raw_bytes_per_second / 1e6:.2f}",
                f"{link.wire_bytes_per_second / 1e6:.2f}",
                f"{link.batches_per_second:.0f}",
                str(link.lost_batches),
                str(link.resent_batches),
                f"{link.rtt_p50_seconds * 1e3:.2f}",
                f"{link.rtt_p99_seconds * 1e3:.2f}",
                str(link.tcp_retransmitted_segments),
                f"{link.tcp_srtt_seconds * 1e3:.2f}",
                "yes" if link.shared_node else "no",
            )
        parts += ["", links]
    if result.expectations:
        parts += ["", expectations_table(result)]
    return Group(*parts)


def expectations_table(result: RunResult) -> Table:
    table = _plain_table("expectation", "expected", "measured", "passed")
    for item in result.expectations:
        table.add_row(
            item.expectation,
            f"{item.expected:g}",
            f"{item.actual:g}",
            "yes" if item.passed else "NO",
        )
    return table


def samples_view(samples: SampleSet) -> Group:
    """Each sample in one line, then each figure's mean and 95 % CI."""
    runs = _plain_table("sample", "outcome", "MB/s", "ratio", "CPU s/GB", "RSS MB", "passed")
    for sample in samples.samples:
        runs.add_row(
            sample.run_id,
            str(sample.outcome),
            f"{sample.figures.throughput_bytes_per_second / 1e6:.2f}",
            f"{sample.figures.compression_ratio:.2f}",
            f"{sample.figures.cpu.cpu_seconds_per_gb:.2f}",
            f"{sample.figures.rss_max_bytes / 1e6:.1f}",
            "yes" if sample.passed else "NO",
        )
    summary = _plain_table("figure", "mean", "95% CI +-", "min", "max", "samples")
    for name, item in samples.summary.items():
        summary.add_row(
            name, f"{item.mean:g}", f"{item.ci95:g}", f"{item.min:g}", f"{item.max:g}",
            str(item.samples),
        )  # fmt: skip
    return Group(
        f"w5xde local: {len(samples.samples)} samples, {samples.outcome}", runs, "", summary
    )


def _plain_table(*columns: str, names: int = 1) -> Table:
    """No borders and no separator line: one header line, then one line per row; the
    first `names` columns are names (left), the rest figures (right)."""
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1))
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < names else "right", no_wrap=True)
    return table


def format_table(result: RunResult | SampleSet) -> str:
    """The result as plain text (for a pipe, a file, or a test)."""
    console = Console(
        file=io.StringIO(), width=PLAIN_WIDTH, color_system=None, record=True, soft_wrap=True
    )
    console.print(samples_view(result) if isinstance(result, SampleSet) else result_view(result))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).rstrip()
