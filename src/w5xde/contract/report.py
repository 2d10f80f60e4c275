"""What a worker reports: its counters, its rates over the last interval, its identity.

The operator pulls it from the worker's report endpoint; `w5xde local` reads the same
model from each child's JSON lines.  Unknown fields are ignored, so an operator keeps
reading the reports of newer workers during a rolling upgrade.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ReportModel(BaseModel):
    """camelCase on the wire; tolerant of fields a newer worker adds."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class SocketBufferReport(ReportModel):
    """What was asked of SO_SNDBUF/SO_RCVBUF and what the kernel granted (it doubles/caps)."""

    requested: int = Field(0, ge=0)
    effective_send: int = Field(0, ge=0)
    effective_receive: int = Field(0, ge=0)


class LinkTuningReport(ReportModel):
    """What one worker's streams to one peer chose and got (docs/tuning.md).

    Keyed by the peer's address in `WorkerReport.linkTuning`.
    """

    #: The zstd level the streams use now; 0 = raw (no compression).
    level: int = 0
    #: `compression.level: auto` chose it (else it is the spec's fixed level).
    auto: bool = False
    #: Batches produced raw (level 0, or did not shrink) and compressed, since start.
    raw_batches: int = Field(0, ge=0)
    compressed_batches: int = Field(0, ge=0)
    #: Share of the batches sent raw, 0..1.
    raw_share: float = Field(0, ge=0, le=1)
    level_switches: int = Field(0, ge=0)
    #: Raw bytes this peer acknowledged, and their share of everything this worker sent.
    sent_raw_bytes: int = Field(0, ge=0)
    share: float = Field(0, ge=0, le=1)
    #: Bytes gathered per sendmsg, and the socket buffer floor under `socketBufferBytes: auto`.
    send_bytes: int = Field(0, ge=0)
    buffer_floor_bytes: int = Field(0, ge=0)


class WorkerReport(ReportModel):
    """One worker's figures at `generatedAt`.

    Counters are cumulative over this incarnation of the worker process; rates are over
    the last `rateWindowSeconds` before `generatedAt`; `networkSeconds` and
    `compressionSeconds` are scaled to a 30 s window (the seed's unit).
    """

    name: str = ""
    node: str = ""
    #: Names one run of the worker process; a new value means its counters restarted
    #: from zero, so the operator keeps the old run's figures in `retiredTotals`.
    incarnation: str = ""
    #: Unix time (seconds) the report was made.
    generated_at: float = Field(0, ge=0)
    rate_window_seconds: float = Field(0, ge=0)
    #: The worker count the worker is streaming for (follows `spec.workers`).
    workers: int = Field(0, ge=0)
    #: A bounded run is over for this worker: it sends nothing more, the figures are final.
    finished: bool = False
    throughput_bytes_per_second: float = Field(0, ge=0)
    wire_bytes_per_second: float = Field(0, ge=0)
    batches_per_second: float = Field(0, ge=0)
    batches: int = Field(0, ge=0)
    raw_bytes: int = Field(0, ge=0)
    wire_bytes: int = Field(0, ge=0)
    lost_batches: int = Field(0, ge=0)
    corrupt_batches: int = Field(0, ge=0)
    resent_batches: int = Field(0, ge=0)
    network_seconds: float = Field(0, ge=0)
    compression_seconds: float = Field(0, ge=0)
    rss_bytes: int = Field(0, ge=0)
    socket_buffer: SocketBufferReport = Field(default_factory=SocketBufferReport)
    peers_connected: int = Field(0, ge=0)
    #: Per peer (address): level, raw/compressed share and share of the batches sent.
    link_tuning: dict[str, LinkTuningReport] = Field(default_factory=dict)


class WorkerExtras(ReportModel):
    """Figures beyond the report that `w5xde local` and the tests look at."""

    sent_batches: int = 0
    sent_raw_bytes: int = 0
    sent_wire_bytes: int = 0
    duplicate_batches: int = 0
    rejected_connections: int = 0
    unacked_batches: int = 0
    incoming_streams: int = 0
    outgoing_streams_connected: int = 0
    rss_peak_bytes: int = 0
    #: Seconds in socket calls and in the codec over the whole run (not per window).
    network_seconds_total: float = 0
    compression_seconds_total: float = 0


class ReportLine(ReportModel):
    """One JSON line of `w5xde worker --report-interval`: what `w5xde local` reads."""

    name: str
    final: bool = False
    elapsed_seconds: float = 0
    report: WorkerReport = Field(default_factory=WorkerReport)
    extras: WorkerExtras = Field(default_factory=WorkerExtras)
