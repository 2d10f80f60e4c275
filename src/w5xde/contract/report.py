"""What a worker reports: its counters, its rates over the last interval, its identity.

The operator pulls it from the worker's report endpoint; `w5xde local` reads the same
model from each child's JSON lines.  Unknown fields are ignored, so an operator keeps
reading the reports of newer workers during a rolling upgrade.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from w5xde.api.v1alpha1 import LinkState, SoftwareVersions


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


class CertificateReport(ReportModel):
    """The worker's TLS identity: how long it holds, and its request while it needs one."""

    #: Unix time its certificate expires; 0 while it has none.
    not_after: float = Field(0, ge=0)
    #: A PEM CSR for the worker's own name, present until the operator signs it.
    request: str | None = Field(None, max_length=4096)


#: A worker streams to at most this many peers (`peers x streamsPerPeer <= 128`), so its
#: report lists at most this many links, and names at most this many senders that lost.
MAX_LINKS_PER_WORKER = 128


class LinkReport(ReportModel):
    """One outgoing link of the reporting worker (to `peer`, over all its streams).

    Counters are cumulative over this incarnation; rates are over the report's rate
    window.  `rawBytes` and `batches` count what the peer acknowledged (delivered and
    verified); `wireBytes` what was written to the link's sockets.  The ACK round trip
    is from the sendmsg that finished a coalesced write to reading the cumulative ACK
    that covers it (nearest-rank p50/p99 over the rate window; 0 with no sample).
    """

    peer: str
    #: The IP and port the sender's streams connected to, as resolved: the peer pod's IP
    #: on the pod path, its Service's ClusterIP on `network.path: service` ("" before the
    #: first connect).  Says which path the link took.
    peer_address: str = Field("", max_length=64)
    streams: int = Field(0, ge=0)
    streams_connected: int = Field(0, ge=0)
    raw_bytes_per_second: float = Field(0, ge=0)
    wire_bytes_per_second: float = Field(0, ge=0)
    batches_per_second: float = Field(0, ge=0)
    batches: int = Field(0, ge=0)
    raw_bytes: int = Field(0, ge=0)
    wire_bytes: int = Field(0, ge=0)
    resent_batches: int = Field(0, ge=0)
    rtt_p50_seconds: float = Field(0, ge=0)
    rtt_p99_seconds: float = Field(0, ge=0)
    rtt_samples: int = Field(0, ge=0)
    #: The link's worst stream state (`Stalled` > `Refused` > `Unreachable` >
    #: `Connecting` > `Flowing`), and how long that stream has been in it.
    state: LinkState = LinkState.FLOWING
    state_seconds: float = Field(0, ge=0)
    #: Why, in the sender's words (the last connect or handshake error), when not flowing.
    state_message: str = Field("", max_length=256)
    #: The kernel's TCP_INFO of the link's sockets (docs/metrics.md): segments
    #: retransmitted (cumulative over this incarnation), the congestion windows in bytes
    #: (summed over streams), the largest smoothed RTT, the delivery rates (summed).
    tcp_retransmitted_segments: int = Field(0, ge=0)
    tcp_cwnd_bytes: int = Field(0, ge=0)
    tcp_srtt_seconds: float = Field(0, ge=0)
    tcp_delivery_rate_bytes_per_second: float = Field(0, ge=0)


class PeerLoss(ReportModel):
    """Batches this worker's receivers found missing (sequence gaps) from one sender."""

    peer: str
    lost_batches: int = Field(0, ge=0)


class LinkTuningReport(ReportModel):
    """What one worker's streams to one peer chose and got (docs/tuning.md).

    Keyed by the peer's worker name in `WorkerReport.linkTuning` (as `links` are).
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
    #: What the worker runs (w5xde, zstandard and libzstd, OpenSSL, Python, kernel).
    versions: SoftwareVersions | None = None
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
    #: Process CPU (user + system, from the kernel) per GB (1e9 bytes) of raw data this
    #: worker received and verified, over the rate window; of it, the seconds its own
    #: timers spent in compression and decompression, and in TLS (encrypting,
    #: decrypting, the copies through OpenSSL's buffers).  0 when nothing arrived.
    cpu_seconds_per_gb: float = Field(0, ge=0)
    compression_cpu_seconds_per_gb: float = Field(0, ge=0)
    tls_cpu_seconds_per_gb: float = Field(0, ge=0)
    #: Process CPU since the worker started.
    cpu_seconds: float = Field(0, ge=0)
    rss_bytes: int = Field(0, ge=0)
    socket_buffer: SocketBufferReport = Field(default_factory=SocketBufferReport)
    peers_connected: int = Field(0, ge=0)
    #: Absent when TLS is off.
    certificate: CertificateReport | None = None
    #: Connections closed because the peer broke the protocol, and refused connections.
    protocol_errors: int = Field(0, ge=0)
    refused_connections: int = Field(0, ge=0)
    #: Which cluster key the worker uses now (the operator ends a rotation once all agree).
    key_fingerprint: str = Field("", max_length=64)
    #: Its outgoing links, one per peer (a newer worker's report; an older one has none).
    links: list[LinkReport] = Field(default_factory=list, max_length=MAX_LINKS_PER_WORKER)
    #: Senders whose batches went missing on the way here (only non-zero ones): the
    #: `lostBatches` of the link sender -> this worker.
    lost_from: list[PeerLoss] = Field(default_factory=list, max_length=MAX_LINKS_PER_WORKER)
    #: Per peer (worker name): level, raw/compressed share and share of the batches sent.
    link_tuning: dict[str, LinkTuningReport] = Field(
        default_factory=dict, max_length=MAX_LINKS_PER_WORKER
    )


class WorkerExtras(ReportModel):
    """Figures beyond the report that `w5xde local` and the tests look at."""

    sent_batches: int = 0
    sent_raw_bytes: int = 0
    sent_wire_bytes: int = 0
    duplicate_batches: int = 0
    #: As the report's `refusedConnections` (one name per figure).
    refused_connections: int = 0
    unacked_batches: int = 0
    incoming_streams: int = 0
    outgoing_streams_connected: int = 0
    rss_peak_bytes: int = 0
    #: Seconds in socket calls, in the codec and in TLS over the whole run (not per window).
    network_seconds_total: float = 0
    compression_seconds_total: float = 0
    tls_seconds_total: float = 0


class ReportLine(ReportModel):
    """One JSON line of `w5xde worker --report-interval`: what `w5xde local` reads."""

    name: str
    final: bool = False
    elapsed_seconds: float = 0
    report: WorkerReport = Field(default_factory=WorkerReport)
    extras: WorkerExtras = Field(default_factory=WorkerExtras)
