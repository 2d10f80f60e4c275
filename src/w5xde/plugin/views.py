"""Pure renderings of a CompressionCluster's status: rich tables, CSV and JSON.

Everything here takes the status as a typed `CompressionClusterStatus` (or the JSON the
API server returns, parsed tolerantly by `api.v1alpha1.parse_status`), so it is
tested without a cluster and a renamed field is a type error, not a silent 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table

from w5xde.api.v1alpha1 import (
    CompressionClusterStatus,
    Interval,
    LinksStatus,
    LinkState,
    RunSummary,
    SampleSetStatus,
    parse_status,
)
from w5xde.contract.link_figures import LinkRow, link_rows
from w5xde.contract.report import WorkerReport

StatusLike = CompressionClusterStatus | Mapping[str, Any]
RunLike = RunSummary | Mapping[str, Any]

#: The columns of `results -o csv`, one row per run.
CSV_COLUMNS = (
    "id", "outcome", "generation", "specDigest", "startedAt", "completedAt", "seconds",
    "workers", "nodes", "links", "linksSharingNode", "throughputBytesPerSecond",
    "throughputMean", "throughputCi95",
    "throughputMin", "throughputMax", "throughputSamples", "wireBytesPerSecond",
    "batchesPerSecond", "compressionRatio", "batches", "rawBytes", "wireBytes",
    "lostBatches", "corruptBatches", "resentBatches", "cpuSecondsPerGb", "passed",
)  # fmt: skip


def typed(status: StatusLike) -> CompressionClusterStatus:
    return status if isinstance(status, CompressionClusterStatus) else parse_status(dict(status))


def typed_run(run: RunLike) -> RunSummary:
    return run if isinstance(run, RunSummary) else RunSummary.model_validate(dict(run))


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def run_row(run: RunSummary) -> dict[str, Any]:
    """One kept run flattened to the CSV columns."""
    flat = run.model_dump(mode="json", by_alias=True)
    totals = run.totals.model_dump(mode="json", by_alias=True)
    throughput = run.throughput
    return {
        **{key: flat.get(key, "") for key in CSV_COLUMNS[:12]},
        "throughputMean": throughput.mean,
        "throughputCi95": throughput.ci95,
        "throughputMin": throughput.min,
        "throughputMax": throughput.max,
        "throughputSamples": throughput.samples,
        "wireBytesPerSecond": run.wire_bytes_per_second,
        "batchesPerSecond": run.batches_per_second,
        "compressionRatio": run.compression_ratio,
        **{key: totals[key] for key in CSV_COLUMNS[-8:-2]},
        "cpuSecondsPerGb": run.cpu_seconds_per_gb.mean,
        "passed": "" if run.passed is None else str(run.passed).lower(),
    }


def run_rows(status: StatusLike) -> list[dict[str, Any]]:
    """The kept runs, oldest first, flattened to the CSV columns."""
    return [run_row(run) for run in typed(status).runs]


def find_run(status: StatusLike, run_id: str | None) -> RunSummary | None:
    runs = typed(status).runs
    if run_id is None:
        return runs[-1] if runs else None
    return next((run for run in runs if run.id == run_id), None)


def results_csv(status: StatusLike, run_id: str | None) -> str:
    rows = run_rows(status)
    rows = [row for row in rows if row["id"] == run_id] if run_id is not None else rows[-1:]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summary_table(name: str, status: StatusLike) -> Table:
    found = typed(status)
    table = Table(title=f"CompressionCluster {name}", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    totals, spread, reporting, run = found.totals, found.spread, found.reporting, found.run
    samples = run.throughput_samples
    rows = [
        ("phase", f"{found.phase}  ready {found.ready or '?'}"),
        ("throughput", f"{found.throughput} raw, "
                       f"{mb(found.wire_bytes_per_second)} MB/s on the wire"),
        ("batches/s", f"{found.batches_per_second:,.1f}"),
        ("ratio", f"{found.compression_ratio}x"),
        ("CPU", f"{found.cpu_seconds_per_gb:,.2f} s per GB received "
                f"({found.compression_cpu_seconds_per_gb:,.2f} in the codec, "
                f"{found.tls_cpu_seconds_per_gb:,.2f} in TLS)"),
        ("spread", f"min {mb(spread.min_bytes_per_second)}  p50 "
                   f"{mb(spread.p50_bytes_per_second)}  max "
                   f"{mb(spread.max_bytes_per_second)} MB/s per worker"),
        ("totals", f"{totals.batches:,} batches, {mb(totals.raw_bytes)} MB, "
                   f"lost {totals.lost_batches}, corrupt {totals.corrupt_batches}, "
                   f"resent {totals.resent_batches}"),
        ("restarts", f"{found.restart_count} worker container restarts"),
        ("run", f"{run.id or '-'} since {run.started_at or '-'}: "
                f"{mb(samples.mean)} ± {mb(samples.ci95)} MB/s over {samples.count} intervals"),
        ("links", links_line(found.links)),
        ("reporting", f"{reporting.workers_reporting} reporting, "
                      f"{reporting.workers_failing} failing, folded "
                      f"{reporting.folded_at or '-'}"),
    ]  # fmt: skip
    if found.samples is not None:
        rows.append(("samples", samples_line(found.samples)))
    for field, value in rows:
        table.add_row(field, value)
    for item in found.conditions:
        if item.status == "True" and item.type in ("Degraded", "LinksStalled", "Failed"):
            table.add_row(item.type, f"{item.reason}: {item.message}")
        if item.type == "Passed":
            table.add_row("passed", f"{item.status.lower()}: {item.message}")
    return table


def samples_line(sample_set: SampleSetStatus) -> str:
    """`2 of 3 samples (run-1 run-2): 12.0 ± 3.1 MB/s, min 10.0, max 14.0; passed`."""
    throughput = sample_set.summary.throughput_bytes_per_second
    verdict = {None: "in progress", True: "passed", False: f"missed: {' '.join(sample_set.missed)}"}
    return (
        f"{sample_set.completed} of {sample_set.samples} samples ({' '.join(sample_set.run_ids)}):"
        f" {mb(throughput.mean)} ± {mb(throughput.ci95)} MB/s, min {mb(throughput.min)},"
        f" max {mb(throughput.max)}; {verdict[sample_set.passed]}"
    )


def notable_table(status: StatusLike) -> Table:
    table = Table(title="notable workers")
    for column in ("worker", "node", "MB/s", "reason", "message"):
        table.add_column(column)
    for item in typed(status).notable_workers:
        table.add_row(
            item.name, item.node, mb(item.throughput_bytes_per_second), item.reason, item.message
        )
    return table


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def links_line(links: LinksStatus | Mapping[str, Any]) -> str:
    """The links summary of the status: counts, MB/s and RTT p99 spreads."""
    found = links if isinstance(links, LinksStatus) else LinksStatus.model_validate(dict(links))
    spread, rtt, shared = found.spread, found.rtt_p99, found.sharing_node
    flag = f", {shared} sharing a node (loopback, not the network)" if shared else ""
    bad = found.stalled + found.unreachable + found.refused
    problems = (
        f", {found.stalled} stalled, {found.unreachable} unreachable, {found.refused} refused"
        if bad
        else ""
    )
    return (
        f"{found.links} links{flag}{problems}; per link min "
        f"{mb(spread.min_bytes_per_second)} p50 {mb(spread.p50_bytes_per_second)} "
        f"max {mb(spread.max_bytes_per_second)} MB/s; RTT p99 min "
        f"{ms(rtt.min_seconds)} p50 {ms(rtt.p50_seconds)} max "
        f"{ms(rtt.max_seconds)} ms"
    )


LINK_COLUMNS = ("from", "to", "raw MB/s", "wire MB/s", "batches/s", "lost", "resent",
                "RTT p50 ms", "RTT p99 ms", "retrans", "srtt ms", "shared node")  # fmt: skip


def _link_cells(
    sender: str, receiver: str, figures: Mapping[str, Any], shared: bool, node: str
) -> list[str]:
    return [
        sender, receiver, mb(figures["raw"]), mb(figures["wire"]), f"{figures['batches']:,.0f}",
        str(figures["lost"]), str(figures["resent"]), ms(figures["p50"]), ms(figures["p99"]),
        str(figures["retrans"]), ms(figures["srtt"]), f"yes ({node})" if shared else "no",
    ]  # fmt: skip


def notable_links_table(status: StatusLike) -> Table:
    """The links the status names (at most 10), with why (and, for a link that does not
    flow, for how long and the sender's words)."""
    table = Table(title="notable links")
    for column in (*LINK_COLUMNS, "reason"):
        table.add_column(column, justify="right", no_wrap=column in ("from", "to"))
    for item in typed(status).links.notable:
        figures = {
            "raw": item.raw_bytes_per_second, "wire": item.wire_bytes_per_second,
            "batches": item.batches_per_second, "lost": item.lost_batches,
            "resent": item.resent_batches, "p50": item.rtt_p50_seconds,
            "p99": item.rtt_p99_seconds, "retrans": item.tcp_retransmitted_segments,
            "srtt": item.tcp_srtt_seconds,
        }  # fmt: skip
        cells = _link_cells(item.sender, item.receiver, figures, item.shared_node, item.sender_node)
        why = str(item.reason)
        if item.state_seconds or item.message:
            why = f"{why} {item.state_seconds:.0f} s: {item.message}".rstrip(": ")
        table.add_row(*cells, why)
    return table


def links_table(rows: list[LinkRow]) -> Table:
    """Every sender -> receiver link of the pulled reports, with its state as the sender
    sees it (`Stalled 45 s`, `Unreachable 12 s` ...; empty while it flows)."""
    table = Table(title="links (pulled now)")
    for column in (*LINK_COLUMNS, "state"):
        table.add_column(column, justify="right", no_wrap=column in ("from", "to"))
    for row in rows:
        figures = {
            "raw": row.raw_bytes_per_second, "wire": row.wire_bytes_per_second,
            "batches": row.batches_per_second, "lost": row.lost_batches,
            "resent": row.resent_batches, "p50": row.rtt_p50_seconds, "p99": row.rtt_p99_seconds,
            "retrans": row.tcp_retransmitted_segments, "srtt": row.tcp_srtt_seconds,
        }  # fmt: skip
        state = "" if row.state is LinkState.FLOWING else f"{row.state} {row.state_seconds:.0f} s"
        table.add_row(
            *_link_cells(row.sender, row.receiver, figures, row.shared_node, row.sender_node),
            state,
        )
    return table


def runs_table(status: StatusLike) -> Table:
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
                   "resent", "CPU s/GB", "RSS MB", "peers", "error"):  # fmt: skip
        table.add_column(column, justify="right", no_wrap=column == "worker")
    for name, report in sorted(reports.items()):
        if isinstance(report, str):
            table.add_row(name, *[""] * 10, report)
            continue
        table.add_row(
            name, report.node, mb(report.throughput_bytes_per_second),
            mb(report.wire_bytes_per_second), f"{report.batches_per_second:,.0f}",
            f"{report.batches:,}", str(report.lost_batches), str(report.resent_batches),
            f"{report.cpu_seconds_per_gb:,.2f}", mb(report.rss_bytes),
            str(report.peers_connected), "",
        )  # fmt: skip
    return table


def status_view(
    name: str, status: StatusLike, reports: Mapping[str, WorkerReport | str] | None
) -> Group:
    found = typed(status)
    parts: list[Any] = [summary_table(name, found)]
    if found.notable_workers:
        parts.append(notable_table(found))
    if found.links.notable:
        parts.append(notable_links_table(found))
    if reports is not None:
        parts.append(workers_table(reports))
        pulled = [report for report in reports.values() if isinstance(report, WorkerReport)]
        parts.append(links_table(link_rows(pulled)))
    if found.runs:
        parts.append(runs_table(found))
    return Group(*parts)


def overlap(a: Interval, b: Interval) -> bool:
    """Whether two mean ± ci95 intervals overlap."""
    return bool(a.mean - a.ci95 <= b.mean + b.ci95 and b.mean - b.ci95 <= a.mean + a.ci95)


def compare_lines(first_run: RunLike, second_run: RunLike) -> list[str]:
    """The comparison of two runs as text lines; spec differences said first."""
    first, second = typed_run(first_run), typed_run(second_run)
    lines = []
    if first.spec_digest != second.spec_digest:
        lines.append(
            f"note: {first.id} and {second.id} measured different specs "
            f"({first.spec_digest} vs {second.spec_digest}, generations "
            f"{first.generation} and {second.generation})"
        )
    for label, a, b, unit in (
        ("throughput", first.throughput, second.throughput, "MB/s"),
        ("batches/s", first.batches, second.batches, "/s"),
    ):
        if not a.samples or not b.samples:
            lines.append(f"{label}: no interval samples in one of the runs")
            continue
        scale = 1e6 if unit == "MB/s" else 1.0
        delta = b.mean - a.mean
        relative = f"{delta / a.mean * 100:+.1f} %" if a.mean else "n/a"
        verdict = (
            "intervals overlap: no clear difference"
            if overlap(a, b)
            else ("intervals do not overlap: a real difference")
        )
        lines.append(
            f"{label}: {first.id} {a.mean / scale:,.1f} ± {a.ci95 / scale:,.1f} {unit}"
            f" (n={a.samples}), {second.id} {b.mean / scale:,.1f} ± "
            f"{b.ci95 / scale:,.1f} {unit} (n={b.samples}): {relative}; {verdict}"
        )
    lines.append(f"ratio: {first.compression_ratio}x -> {second.compression_ratio}x")
    lines.append(f"lost batches: {first.totals.lost_batches} -> {second.totals.lost_batches}")
    return lines
