"""What `w5xde local` prints at the end: `contract.figures` over each worker's last line.

Typed, and computed only by the shared fold (`run_averages` over the run's counters and
length, `link_rows` for the links), so nothing here re-derives a figure.  The field
names are `w5xde local --json`'s published keys (benchmarks and scripts read them), so
the models take them as they are rather than the API's camelCase.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from w5xde.api.v1alpha1 import Totals
from w5xde.contract.figures import run_averages, totals_of
from w5xde.contract.link_figures import LinkRow
from w5xde.contract.report import ReportLine


class _Local(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeResult(_Local):
    """One worker's run: its counters over its own elapsed time."""

    name: str
    exit_code: int | None
    elapsed_s: float
    batches: int
    raw_bytes: int
    wire_bytes: int
    throughput_bytes_per_s: float
    batches_per_s: float
    compression_ratio: float
    network_seconds: float
    compression_seconds: float
    rss_bytes_max: int
    lost_batches: int
    corrupt_batches: int
    resent_batches: int
    duplicate_batches: int
    refused_connections: int
    socket_buffer: dict[str, object]


class LinkResult(_Local):
    """One sender -> receiver link over the sender's elapsed time."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    sender: str
    receiver: str
    raw_bytes: int
    raw_bytes_per_s: float
    wire_bytes_per_s: float
    batches_per_s: float
    lost_batches: int
    resent_batches: int
    rtt_p50_s: float
    rtt_p99_s: float
    shared_node: bool


class LocalResult(_Local):
    """The run: the cluster's figures over the longest worker's elapsed time."""

    workers: int
    duration_s: float
    throughput_bytes_per_s: float
    wire_bytes_per_s: float
    batches: int
    batches_per_s: float
    compression_ratio: float
    network_seconds_per_worker: float
    compression_seconds_per_worker: float
    rss_bytes_max: int
    lost_batches: int
    corrupt_batches: int
    resent_batches: int
    nodes: list[NodeResult]
    links: list[LinkResult]

    def as_json(self) -> dict[str, object]:
        """The published JSON: links keep their `from` / `to` keys."""
        data = self.model_dump(mode="json")
        for link in data["links"]:
            link["from"] = link.pop("sender")
            link["to"] = link.pop("receiver")
        return data


def node_result(name: str, exit_code: int | None, line: ReportLine, elapsed: float) -> NodeResult:
    report, extras = line.report, line.extras
    figures = run_averages(totals_of([report]), elapsed)
    return NodeResult(
        name=name,
        exit_code=exit_code,
        elapsed_s=elapsed,
        batches=report.batches,
        raw_bytes=report.raw_bytes,
        wire_bytes=report.wire_bytes,
        throughput_bytes_per_s=report.raw_bytes / elapsed,
        batches_per_s=report.batches / elapsed,
        compression_ratio=figures.compression_ratio,
        network_seconds=extras.network_seconds_total,
        compression_seconds=extras.compression_seconds_total,
        rss_bytes_max=extras.rss_peak_bytes,
        lost_batches=report.lost_batches,
        corrupt_batches=report.corrupt_batches,
        resent_batches=report.resent_batches,
        duplicate_batches=extras.duplicate_batches,
        refused_connections=extras.refused_connections,
        socket_buffer=report.socket_buffer.model_dump(mode="json", by_alias=True),
    )


def link_result(row: LinkRow, elapsed: float) -> LinkResult:
    figures = run_averages(
        Totals(raw_bytes=row.raw_bytes, wire_bytes=row.wire_bytes, batches=row.batches), elapsed
    )
    return LinkResult(
        sender=row.sender,
        receiver=row.receiver,
        raw_bytes=row.raw_bytes,
        raw_bytes_per_s=figures.throughput_bytes_per_second,
        wire_bytes_per_s=figures.wire_bytes_per_second,
        batches_per_s=figures.batches_per_second,
        lost_batches=row.lost_batches,
        resent_batches=row.resent_batches,
        rtt_p50_s=row.rtt_p50_seconds,
        rtt_p99_s=row.rtt_p99_seconds,
        shared_node=row.shared_node,
    )


def local_result(
    workers: int,
    nodes: Sequence[NodeResult],
    lines: Sequence[ReportLine],
    links: Sequence[LinkResult],
    wall_seconds: float,
) -> LocalResult:
    duration = max((node.elapsed_s for node in nodes), default=wall_seconds)
    totals = totals_of(line.report for line in lines)
    figures = run_averages(totals, duration)
    count = max(1, len(nodes))
    return LocalResult(
        workers=workers,
        duration_s=round(duration, 3),
        throughput_bytes_per_s=figures.throughput_bytes_per_second,
        wire_bytes_per_s=figures.wire_bytes_per_second,
        batches=totals.batches,
        batches_per_s=figures.batches_per_second,
        compression_ratio=figures.compression_ratio,
        network_seconds_per_worker=round(sum(n.network_seconds for n in nodes) / count, 3),
        compression_seconds_per_worker=round(sum(n.compression_seconds for n in nodes) / count, 3),
        rss_bytes_max=max((node.rss_bytes_max for node in nodes), default=0),
        lost_batches=totals.lost_batches,
        corrupt_batches=totals.corrupt_batches,
        resent_batches=totals.resent_batches,
        nodes=list(nodes),
        links=list(links),
    )
