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


def result_view(result: dict[str, Any]) -> Group:
    """The seed's figures, total, per worker and per link."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_column()
    rows = [
        (
            "throughput",
            f"{result['throughput_bytes_per_s'] / 1e6:.2f}",
            f"MB/s raw, {result['wire_bytes_per_s'] / 1e6:.2f} MB/s on the wire",
        ),
        ("batches", str(result["batches"]), f"({result['batches_per_s']:.0f}/s)"),
        ("ratio", f"{result['compression_ratio']:.2f}", "x"),
        ("network", f"{result['network_seconds_per_worker']:.2f}", "s per worker"),
        ("compression", f"{result['compression_seconds_per_worker']:.2f}", "s per worker"),
        ("max RSS", f"{result['rss_bytes_max'] / 1e6:.1f}", "MB"),
        (
            "lost/corrupt/resent",
            f"{result['lost_batches']}/{result['corrupt_batches']}/{result['resent_batches']}",
            "",
        ),
    ]
    for row in rows:
        summary.add_row(*row)
    workers = _plain_table(
        "worker", "MB/s", "batches", "batches/s", "ratio", "net s", "comp s", "RSS MB",
        "lost", "corr", "resent",
    )  # fmt: skip
    for node in result["nodes"]:
        workers.add_row(
            node["name"],
            f"{node['throughput_bytes_per_s'] / 1e6:.2f}",
            str(node["batches"]),
            f"{node['batches_per_s']:.0f}",
            f"{node['compression_ratio']:.2f}",
            f"{node['network_seconds']:.2f}",
            f"{node['compression_seconds']:.2f}",
            f"{node['rss_bytes_max'] / 1e6:.1f}",
            str(node["lost_batches"]),
            str(node["corrupt_batches"]),
            str(node["resent_batches"]),
        )
    parts: list[Any] = [
        f"w5xde local: {result['workers']} workers, {result['duration_s']:.1f} s",
        summary,
        "",
        workers,
    ]
    if result.get("links"):
        links = _plain_table(
            "from", "to", "raw MB/s", "wire MB/s", "batches/s", "lost", "resent",
            "RTT p50 ms", "RTT p99 ms", "shared node", names=2,
        )  # fmt: skip
        for link in result["links"]:
            links.add_row(
                link["from"],
                link["to"],
                f"{link['raw_bytes_per_s'] / 1e6:.2f}",
                f"{link['wire_bytes_per_s'] / 1e6:.2f}",
                f"{link['batches_per_s']:.0f}",
                str(link["lost_batches"]),
                str(link["resent_batches"]),
                f"{link['rtt_p50_s'] * 1e3:.2f}",
                f"{link['rtt_p99_s'] * 1e3:.2f}",
                "yes" if link["shared_node"] else "no",
            )
        parts += ["", links]
    return Group(*parts)


def _plain_table(*columns: str, names: int = 1) -> Table:
    """No borders and no separator line: one header line, then one line per row; the
    first `names` columns are names (left), the rest figures (right)."""
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1))
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < names else "right", no_wrap=True)
    return table


def format_table(result: dict[str, Any]) -> str:
    """The result as plain text (for a pipe, a file, or a test)."""
    console = Console(
        file=io.StringIO(), width=PLAIN_WIDTH, color_system=None, record=True, soft_wrap=True
    )
    console.print(result_view(result))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()).rstrip()
