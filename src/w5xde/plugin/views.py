"""Pure renderings of a CompressionCluster's status: rich tables, CSV and JSON.

Everything here takes the status as the API server returns it (camelCase JSON), so
it is tested without a cluster.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table

from w5xde.contract.link_figures import LinkRow, link_rows
from w5xde.contract.report import WorkerReport
from w5xde.contract.statistics import SampleStats

#: The columns of `results -o csv`, one row per run.
CSV_COLUMNS = (
    "id", "outcome", "generation", "specDigest", "startedAt", "completedAt", "seconds",
    "workers", "nodes", "links", "linksSharingNode", "throughputBytesPerSecond",
    "throughputMean", "throughputCi95",
    "throughputMin", "throughputMax", "throughputSamples", "wireBytesPerSecond",
    "batchesPerSecond", "compressionRatio", "batches", "rawBytes", "wireBytes",
    "lostBatches", "corruptBatches", "resentBatches",
)  # fmt: skip


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def run_rows(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The kept runs, oldest first, flattened to the CSV columns."""
    rows = []
    for run in status.get("runs") or []:
        totals = run.get("totals") or {}
        throughput = run.get("throughput") or {}
        rows.append(
            {
                **{key: run.get(key, "") for key in CSV_COLUMNS[:9]},
                "links": run.get("links", 0),
                "linksSharingNode": run.get("linksSharingNode", 0),
                "throughputBytesPerSecond": run.get("throughputBytesPerSecond", 0),
                "throughputMean": throughput.get("mean", 0),
                "throughputCi95": throughput.get("ci95", 0),
                "throughputMin": throughput.get("min", 0),
                "throughputMax": throughput.get("max", 0),
                "throughputSamples": throughput.get("samples", 0),
                "wireBytesPerSecond": run.get("wireBytesPerSecond", 0),
                "batchesPerSecond": run.get("batchesPerSecond", 0),
                "compressionRatio": run.get("compressionRatio", 0),
                **{key: totals.get(key, 0) for key in CSV_COLUMNS[-6:]},
            }
        )
    return rows


def find_run(status: Mapping[str, Any], run_id: str | None) -> dict[str, Any] | None:
    runs = list(status.get("runs") or [])
    if run_id is None:
        return runs[-1] if runs else None
    return next((run for run in runs if run.get("id") == run_id), None)


def results_csv(status: Mapping[str, Any], run_id: str | None) -> str:
    rows = run_rows(status)
    rows = [row for row in rows if row["id"] == run_id] if run_id is not None else rows[-1:]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def results_json(run: Mapping[str, Any]) -> str:
    return json.dumps(run, indent=2, sort_keys=True)


def summary_table(name: str, status: Mapping[str, Any]) -> Table:
    table = Table(title=f"CompressionCluster {name}", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    totals = status.get("totals") or {}
    spread = status.get("spread") or {}
    reporting = status.get("reporting") or {}
    run = status.get("run") or {}
    samples = SampleStats.model_validate(run.get("throughputSamples") or {})
    rows = [
        ("phase", f"{status.get('phase', '?')}  ready {status.get('ready', '?')}"),
        ("throughput", f"{status.get('throughput', '')} raw, "
                       f"{mb(status.get('wireBytesPerSecond', 0))} MB/s on the wire"),
        ("batches/s", f"{status.get('batchesPerSecond', 0):,.1f}"),
        ("ratio", f"{status.get('compressionRatio', 0)}x"),
        ("spread", f"min {mb(spread.get('minBytesPerSecond', 0))}  p50 "
                   f"{mb(spread.get('p50BytesPerSecond', 0))}  max "
                   f"{mb(spread.get('maxBytesPerSecond', 0))} MB/s per worker"),
        ("totals", f"{totals.get('batches', 0):,} batches, {mb(totals.get('rawBytes', 0))} MB, "
                   f"lost {totals.get('lostBatches', 0)}, "
                   f"corrupt {totals.get('corruptBatches', 0)}, "
                   f"resent {totals.get('resentBatches', 0)}"),
        ("run", f"{run.get('id', '-')} since {run.get('startedAt') or '-'}: "
                f"{mb(samples.mean)} ± {mb(samples.ci95)} MB/s over {samples.count} intervals"),
        ("links", links_line(status.get("links") or {})),
        ("reporting", f"{reporting.get('workersReporting', 0)} reporting, "
                      f"{reporting.get('workersFailing', 0)} failing, folded "
                      f"{reporting.get('foldedAt') or '-'}"),
    ]  # fmt: skip
    for field, value in rows:
        table.add_row(field, value)
    return table


def notable_table(status: Mapping[str, Any]) -> Table:
    table = Table(title="notable workers")
    for column in ("worker", "node", "MB/s", "reason", "message"):
        table.add_column(column)
    for item in status.get("notableWorkers") or []:
        table.add_row(
            item.get("name", ""),
            item.get("node", ""),
            mb(item.get("throughputBytesPerSecond", 0)),
            item.get("reason", ""),
            item.get("message", ""),
        )
    return table


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def links_line(links: Mapping[str, Any]) -> str:
    """The links summary of the status: counts, MB/s and RTT p99 spreads."""
    spread = links.get("spread") or {}
    rtt = links.get("rttP99") or {}
    shared = links.get("sharingNode", 0)
    flag = f", {shared} sharing a node (loopback, not the network)" if shared else ""
    return (
        f"{links.get('links', 0)} links{flag}; per link min "
        f"{mb(spread.get('minBytesPerSecond', 0))} p50 {mb(spread.get('p50BytesPerSecond', 0))} "
        f"max {mb(spread.get('maxBytesPerSecond', 0))} MB/s; RTT p99 min "
        f"{ms(rtt.get('minSeconds', 0))} p50 {ms(rtt.get('p50Seconds', 0))} max "
        f"{ms(rtt.get('maxSeconds', 0))} ms"
    )


LINK_COLUMNS = ("from", "to", "raw MB/s", "wire MB/s", "batches/s", "lost", "resent",
                "RTT p50 ms", "RTT p99 ms", "shared node")  # fmt: skip


def _link_cells(
    sender: str, receiver: str, figures: Mapping[str, Any], shared: bool, node: str
) -> list[str]:
    return [
        sender, receiver, mb(figures["raw"]), mb(figures["wire"]), f"{figures['batches']:,.0f}",
        str(figures["lost"]), str(figures["resent"]), ms(figures["p50"]), ms(figures["p99"]),
        f"yes ({node})" if shared else "no",
    ]  # fmt: skip


def notable_links_table(status: Mapping[str, Any]) -> Table:
    """The links the status names (at most 10), with why."""
    table = Table(title="notable links")
    for column in (*LINK_COLUMNS, "reason"):
        table.add_column(column, justify="right", no_wrap=column in ("from", "to"))
    for item in (status.get("links") or {}).get("notable") or []:
        figures = {
            "raw": item.get("rawBytesPerSecond", 0), "wire": item.get("wireBytesPerSecond", 0),
            "batches": item.get("batchesPerSecond", 0), "lost": item.get("lostBatches", 0),
            "resent": item.get("resentBatches", 0), "p50": item.get("rttP50Seconds", 0),
            "p99": item.get("rttP99Seconds", 0),
        }  # fmt: skip
        cells = _link_cells(
            item.get("sender", ""), item.get("receiver", ""), figures,
            bool(item.get("sharedNode")), item.get("senderNode", ""),
        )  # fmt: skip
        table.add_row(*cells, item.get("reason", ""))
    return table


def links_table(rows: list[LinkRow]) -> Table:
    """Every sender -> receiver link of the pulled reports."""
    table = Table(title="links (pulled now)")
    for column in LINK_COLUMNS:
        table.add_column(column, justify="right", no_wrap=column in ("from", "to"))
    for row in rows:
        figures = {
            "raw": row.raw_bytes_per_second, "wire": row.wire_bytes_per_second,
            "batches": row.batches_per_second, "lost": row.lost_batches,
            "resent": row.resent_batches, "p50": row.rtt_p50_seconds, "p99": row.rtt_p99_seconds,
        }  # fmt: skip
        table.add_row(
            *_link_cells(row.sender, row.receiver, figures, row.shared_node, row.sender_node)
        )
    return table


def runs_table(status: Mapping[str, Any]) -> Table:
    table = Table(title="runs (newest last)")
    for column in ("run", "outcome", "gen", "spec", "seconds", "MB/s", "mean ± 95 % CI",
                   "batches/s", "ratio", "lost", "workers", "nodes", "links",
                   "shared"):  # fmt: skip
        table.add_column(column, justify="right", no_wrap=column in ("run", "outcome", "spec"))
    for row in run_rows(status):
        table.add_row(
            str(row["id"]), str(row["outcome"]), str(row["generation"]), str(row["specDigest"]),
            f"{row['seconds']}", mb(row["throughputBytesPerSecond"]),
            f"{mb(row['throughputMean'])} ± {mb(row['throughputCi95'])}",
            f"{row['batchesPerSecond']:,.1f}", f"{row['compressionRatio']}",
            str(row["lostBatches"]), str(row["workers"]), str(row["nodes"]),
            str(row["links"]), str(row["linksSharingNode"]),
        )  # fmt: skip
    return table


def workers_table(reports: Mapping[str, WorkerReport | str]) -> Table:
    table = Table(title="workers (pulled now)")
    for column in ("worker", "node", "MB/s", "wire MB/s", "batches/s", "batches", "lost",
                   "resent", "RSS MB", "peers", "error"):  # fmt: skip
        table.add_column(column, justify="right", no_wrap=column == "worker")
    for name, report in sorted(reports.items()):
        if isinstance(report, str):
            table.add_row(name, *[""] * 9, report)
            continue
        table.add_row(
            name, report.node, mb(report.throughput_bytes_per_second),
            mb(report.wire_bytes_per_second), f"{report.batches_per_second:,.0f}",
            f"{report.batches:,}", str(report.lost_batches), str(report.resent_batches),
            mb(report.rss_bytes), str(report.peers_connected), "",
        )  # fmt: skip
    return table


def status_view(
    name: str, status: Mapping[str, Any], reports: Mapping[str, WorkerReport | str] | None
) -> Group:
    parts: list[Any] = [summary_table(name, status)]
    if status.get("notableWorkers"):
        parts.append(notable_table(status))
    if (status.get("links") or {}).get("notable"):
        parts.append(notable_links_table(status))
    if reports is not None:
        parts.append(workers_table(reports))
        pulled = [report for report in reports.values() if isinstance(report, WorkerReport)]
        parts.append(links_table(link_rows(pulled)))
    if status.get("runs"):
        parts.append(runs_table(status))
    return Group(*parts)


def overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two mean ± ci95 intervals overlap."""
    low_a, high_a = a["mean"] - a["ci95"], a["mean"] + a["ci95"]
    low_b, high_b = b["mean"] - b["ci95"], b["mean"] + b["ci95"]
    return bool(low_a <= high_b and low_b <= high_a)


def compare_lines(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The comparison of two runs as text lines; spec differences said first."""
    lines = []
    if first.get("specDigest") != second.get("specDigest"):
        lines.append(
            f"note: {first['id']} and {second['id']} measured different specs "
            f"({first.get('specDigest')} vs {second.get('specDigest')}, generations "
            f"{first.get('generation')} and {second.get('generation')})"
        )
    for label, key, unit in (
        ("throughput", "throughput", "MB/s"),
        ("batches/s", "batches", "/s"),
    ):
        a, b = first.get(key) or {}, second.get(key) or {}
        if not a.get("samples") or not b.get("samples"):
            lines.append(f"{label}: no interval samples in one of the runs")
            continue
        scale = 1e6 if unit == "MB/s" else 1.0
        delta = b["mean"] - a["mean"]
        relative = f"{delta / a['mean'] * 100:+.1f} %" if a["mean"] else "n/a"
        verdict = (
            "intervals overlap: no clear difference"
            if overlap(a, b)
            else ("intervals do not overlap: a real difference")
        )
        lines.append(
            f"{label}: {first['id']} {a['mean'] / scale:,.1f} ± {a['ci95'] / scale:,.1f} {unit}"
            f" (n={a['samples']}), {second['id']} {b['mean'] / scale:,.1f} ± "
            f"{b['ci95'] / scale:,.1f} {unit} (n={b['samples']}): {relative}; {verdict}"
        )
    ratio_a, ratio_b = first.get("compressionRatio", 0), second.get("compressionRatio", 0)
    lines.append(f"ratio: {ratio_a}x -> {ratio_b}x")
    lost = (
        (first.get("totals") or {}).get("lostBatches", 0),
        (second.get("totals") or {}).get("lostBatches", 0),
    )
    lines.append(f"lost batches: {lost[0]} -> {lost[1]}")
    return lines
