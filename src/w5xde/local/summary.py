"""What `w5xde local` prints at the end: a `contract.results.RunResult` over each
worker's last line (docs/results.md).

Typed, and computed only by the shared folds (`link_rows` for the links,
`results.run_figures` for the run), so nothing here re-derives a figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from w5xde.api.v1alpha1 import ExpectSpec
from w5xde.contract import results
from w5xde.contract.link_figures import LinkRow
from w5xde.contract.report import LinkReport, ReportLine
from w5xde.contract.results import LinkResult, Outcome, RunResult, WorkerResult


def rfc3339(moment: datetime) -> str:
    """UTC to the millisecond, with a `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def worker_result(
    name: str, exit_code: int | None, line: ReportLine, elapsed: float
) -> WorkerResult:
    """One worker's run: its counters over its own elapsed time."""
    report, extras = line.report, line.extras
    buffer = report.socket_buffer
    return WorkerResult(
        name=name,
        node=report.node,
        exit_code=exit_code,
        elapsed_seconds=round(elapsed, 3),
        batches=report.batches,
        raw_bytes=report.raw_bytes,
        wire_bytes=report.wire_bytes,
        throughput_bytes_per_second=results.rate(report.raw_bytes, elapsed),
        batches_per_second=results.rate(report.batches, elapsed),
        compression_ratio=results.ratio(report.raw_bytes, report.wire_bytes),
        network_seconds=round(extras.network_seconds_total, 3),
        compression_seconds=round(extras.compression_seconds_total, 3),
        tls_seconds=round(extras.tls_seconds_total, 3),
        cpu=results.cpu_cost(
            report.cpu_seconds,
            extras.compression_seconds_total,
            report.raw_bytes,
            extras.tls_seconds_total,
        ),
        rss_max_bytes=extras.rss_peak_bytes,
        lost_batches=report.lost_batches,
        corrupt_batches=report.corrupt_batches,
        resent_batches=report.resent_batches,
        duplicate_batches=extras.duplicate_batches,
        refused_connections=extras.refused_connections,
        socket_buffer_requested_bytes=buffer.requested,
        socket_buffer_effective_send_bytes=buffer.effective_send,
        socket_buffer_effective_receive_bytes=buffer.effective_receive,
    )


def link_result(row: LinkRow, link: LinkReport | None, elapsed: float) -> LinkResult:
    """One sender -> receiver link over the sender's elapsed time."""
    return LinkResult(
        sender=row.sender,
        receiver=row.receiver,
        shared_node=row.shared_node,
        state=row.state,
        raw_bytes=row.raw_bytes,
        raw_bytes_per_second=results.rate(row.raw_bytes, elapsed),
        wire_bytes_per_second=results.rate(row.wire_bytes, elapsed),
        batches_per_second=results.rate(row.batches, elapsed),
        lost_batches=row.lost_batches,
        resent_batches=row.resent_batches,
        rtt_p50_seconds=round(row.rtt_p50_seconds, 6),
        rtt_p99_seconds=round(row.rtt_p99_seconds, 6),
        tcp_retransmitted_segments=row.tcp_retransmitted_segments,
        tcp_cwnd_bytes=link.tcp_cwnd_bytes if link else 0,
        tcp_srtt_seconds=round(row.tcp_srtt_seconds, 6),
        tcp_delivery_rate_bytes_per_second=round(
            link.tcp_delivery_rate_bytes_per_second if link else 0.0, 1
        ),
    )


def local_result(
    *,
    run_id: str,
    started: datetime,
    completed: datetime,
    outcome: Outcome,
    reason: str,
    configuration: Mapping[str, object],
    workers: Sequence[WorkerResult],
    links: Sequence[LinkResult],
    wall_seconds: float,
    expect: ExpectSpec,
) -> RunResult:
    """The run: the cluster's figures over the longest worker's elapsed time."""
    seconds = max((worker.elapsed_seconds for worker in workers), default=wall_seconds)
    node = results.this_node()
    figures = results.run_figures(workers, links, seconds or wall_seconds)
    checks = results.check(expect, figures)
    return RunResult(
        run_id=run_id,
        started_at=rfc3339(started),
        completed_at=rfc3339(completed),
        outcome=outcome,
        reason=reason,
        configuration=dict(configuration),
        versions=results.versions(),
        environment=results.Environment(
            nodes=[node], links_sharing_node=len(links), peers_share_node=True
        ),
        figures=figures,
        workers=list(workers),
        links=list(links),
        expectations=list(checks),
        passed=results.verdict(outcome, checks),
    )
