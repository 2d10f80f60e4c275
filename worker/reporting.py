"""One reading of a worker, and the three views of it: the report (the operator's and
`w5xde local`'s), the extras (tests and `w5xde local`) and the Prometheus metrics.

`Worker.reading()` takes the reading once (counters, rates over the window, streams,
identity); everything here is a pure mapping of that reading, so a figure is computed
in one place and every view shows the same number under one name.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from w5xde.contract.report import (
    CertificateReport,
    LinkReport,
    LinkTuningReport,
    PeerLoss,
    SocketBufferReport,
    WorkerExtras,
    WorkerReport,
)
from w5xde.contract.versions import running_versions
from w5xde.worker.rates import Rates, Snapshot
from w5xde.worker.sockets import BufferSizes

#: Report seconds (network, compression) are per this many seconds, as the seed's were.
SECONDS_WINDOW = 30.0


@dataclass(frozen=True, slots=True)
class CpuCost:
    """Process CPU per GB of raw data received, and the compression and TLS shares of it."""

    total: float
    compression: float
    tls: float = 0.0


@dataclass(frozen=True)
class Reading:
    """A worker at one moment: cumulative counters, rates over the window, the rest."""

    name: str
    node: str
    incarnation: str
    generated_at: float
    workers: int
    finished: bool
    now: Snapshot
    rates: Rates
    requested_buffer_bytes: int
    buffer_sizes: BufferSizes | None
    peers_connected: int
    incoming_streams: int
    outgoing_streams_connected: int
    unacked_batches: int
    refused_connections: int
    certificate: CertificateReport | None
    links: list[LinkReport]
    lost_from: list[PeerLoss]
    key_fingerprint: str
    link_tuning: dict[str, LinkTuningReport]


def cpu_cost(rates: Rates) -> CpuCost:
    received = rates.received.raw_bytes
    coding = rates.received.compression_seconds + rates.sent.compression_seconds
    tls = rates.received.tls_seconds + rates.sent.tls_seconds
    return CpuCost(
        per_gb(rates.cpu_seconds, received), per_gb(coding, received), per_gb(tls, received)
    )


def per_gb(seconds: float, raw_bytes: int) -> float:
    """Seconds per 1e9 raw bytes, rounded to what it means (0 with nothing moved)."""
    if raw_bytes <= 0:
        return 0.0
    return round(max(0.0, seconds) * 1e9 / raw_bytes, 3)


def worker_report(reading: Reading) -> WorkerReport:
    """Cumulative counters now, rates over the last window."""
    received, sent = reading.now.received, reading.now.sent
    rates = reading.rates
    seconds = rates.seconds
    delta_in, delta_out = rates.received, rates.sent
    sizes = reading.buffer_sizes
    scale = SECONDS_WINDOW / seconds
    cost = cpu_cost(rates)
    return WorkerReport(
        name=reading.name,
        node=reading.node,
        incarnation=reading.incarnation,
        generated_at=round(reading.generated_at, 3),
        rate_window_seconds=round(seconds, 3),
        workers=reading.workers,
        finished=reading.finished,
        versions=running_versions(),
        throughput_bytes_per_second=round(max(0, delta_in.raw_bytes) / seconds, 1),
        wire_bytes_per_second=round(max(0, delta_in.wire_bytes) / seconds, 1),
        batches_per_second=round(max(0, delta_in.batches) / seconds, 2),
        batches=received.batches,
        raw_bytes=received.raw_bytes,
        wire_bytes=received.wire_bytes,
        lost_batches=received.lost_batches,
        corrupt_batches=received.corrupt_batches,
        resent_batches=sent.resent_batches,
        network_seconds=round(
            max(0.0, delta_in.network_seconds + delta_out.network_seconds) * scale, 3
        ),
        compression_seconds=round(
            max(0.0, delta_in.compression_seconds + delta_out.compression_seconds) * scale, 3
        ),
        cpu_seconds_per_gb=cost.total,
        compression_cpu_seconds_per_gb=cost.compression,
        tls_cpu_seconds_per_gb=cost.tls,
        cpu_seconds=round(reading.now.cpu_seconds, 3),
        rss_bytes=current_rss_bytes(),
        socket_buffer=SocketBufferReport(
            requested=reading.requested_buffer_bytes,
            effective_send=sizes.send if sizes else 0,
            effective_receive=sizes.receive if sizes else 0,
        ),
        peers_connected=reading.peers_connected,
        certificate=reading.certificate,
        protocol_errors=received.protocol_errors + sent.protocol_errors,
        refused_connections=reading.refused_connections,
        links=reading.links,
        lost_from=reading.lost_from,
        key_fingerprint=reading.key_fingerprint,
        link_tuning=reading.link_tuning,
    )


def worker_extras(reading: Reading) -> WorkerExtras:
    """Figures beyond the report that tests and `w5xde local` look at."""
    received, sent = reading.now.received, reading.now.sent
    return WorkerExtras(
        sent_batches=sent.batches,
        sent_raw_bytes=sent.raw_bytes,
        sent_wire_bytes=sent.wire_bytes,
        duplicate_batches=received.duplicate_batches,
        refused_connections=reading.refused_connections,
        unacked_batches=reading.unacked_batches,
        incoming_streams=reading.incoming_streams,
        outgoing_streams_connected=reading.outgoing_streams_connected,
        rss_peak_bytes=peak_rss_bytes(),
        network_seconds_total=round(received.network_seconds + sent.network_seconds, 4),
        compression_seconds_total=round(received.compression_seconds + sent.compression_seconds, 4),
        tls_seconds_total=round(received.tls_seconds + sent.tls_seconds, 4),
    )


def current_rss_bytes() -> int:
    """Resident set size now (what a pod's memory limit sees)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Largest resident set size of this process image so far (`VmHWM`).

    Not `getrusage`'s `ru_maxrss`: Linux carries that across `exec`, so a worker started
    by a large parent (`w5xde local`, a bench harness) reported the parent's RSS at the
    spawn as its own peak (measured: 216 MB for a 10.9 MB child of a 200 MB parent).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
