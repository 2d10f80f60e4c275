"""`/metrics`, `/healthz`, `/readyz` and `/report` on the metrics port.

The collector reads the worker's counters at scrape time, so the hot path never
touches a Prometheus object.  `/report` is the operator's (HMAC-authenticated, see
`report_endpoint`); the rest is for Prometheus and the kubelet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from w5xde.api.v1alpha1 import LinkState
from w5xde.contract import auth, telemetry
from w5xde.contract.endpoints import MAX_CERTIFICATE_BYTES
from w5xde.contract.report import LinkTuningReport
from w5xde.worker import http_serving
from w5xde.worker.http_serving import HttpLoop, Request, Response
from w5xde.worker.links import LinkFigures
from w5xde.worker.refusals import RefusalLog
from w5xde.worker.report_endpoint import (
    Answer,
    ReportEndpoint,
    is_certificate_path,
    is_report_path,
    is_resize_path,
)
from w5xde.worker.reporting import cpu_cost, current_rss_bytes, worker_extras
from w5xde.worker.runtime import Worker

log = logging.getLogger("w5xde.metrics")


class WorkerCollector:
    """Exposes one worker's figures as `w5xde_*` metrics."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        # One reading, as the report takes it: every view shows the same figures.
        reading = self._worker.reading()
        received, sent = reading.now.received, reading.now.sent
        extras = worker_extras(reading)
        counters: list[tuple[str, str, float]] = [
            ("w5xde_received_batches", "Batches received and verified", received.batches),
            ("w5xde_received_raw_bytes", "Raw bytes received and verified", received.raw_bytes),
            ("w5xde_received_wire_bytes", "Compressed bytes received", received.wire_bytes),
            ("w5xde_sent_batches", "Batches sent and acknowledged", sent.batches),
            ("w5xde_sent_raw_bytes", "Raw bytes sent and acknowledged", sent.raw_bytes),
            ("w5xde_sent_wire_bytes", "Bytes written to sockets", sent.wire_bytes),
            (
                "w5xde_network_seconds",
                "Seconds spent in socket calls",
                received.network_seconds + sent.network_seconds,
            ),
            (
                "w5xde_compression_seconds",
                "Seconds spent compressing and decompressing",
                received.compression_seconds + sent.compression_seconds,
            ),
            ("w5xde_lost_batches", "Sequence gaps seen by receivers", received.lost_batches),
            ("w5xde_corrupt_batches", "Batches that failed verification", received.corrupt_batches),
            ("w5xde_resent_batches", "Batches sent again after a reconnect", sent.resent_batches),
            (
                "w5xde_duplicate_batches",
                "Replayed batches dropped as duplicates",
                received.duplicate_batches,
            ),
        ]
        for name, text, value in counters:
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        # Labelled: by side (the receiving or the sending end of a stream) and by reason.
        errors = CounterMetricFamily(
            "w5xde_protocol_errors",
            "Streams closed because the peer broke the protocol, by side",
            labels=["side"],
        )
        errors.add_metric(["receive"], received.protocol_errors)
        errors.add_metric(["send"], sent.protocol_errors)
        yield errors
        rejected = CounterMetricFamily(
            "w5xde_rejected_connections",
            "Incoming data connections refused: failed handshakes, over the caps, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(self._worker.refusal_reasons().items()):
            rejected.add_metric([reason], count)
        yield rejected
        sizes = reading.buffer_sizes
        cost = cpu_cost(reading.rates)
        gauges: list[tuple[str, str, float]] = [
            (
                "w5xde_cpu_per_gigabyte_seconds",
                "Process CPU seconds per GB of raw data received, over the rate window",
                cost.total,
            ),
            (
                "w5xde_compression_cpu_per_gigabyte_seconds",
                "Of that, seconds in compression and decompression",
                cost.compression,
            ),
            (
                "w5xde_tls_cpu_per_gigabyte_seconds",
                "Of that, seconds in TLS: encrypting, decrypting, copies through OpenSSL",
                cost.tls,
            ),
            ("w5xde_rss_bytes", "Resident set size", current_rss_bytes()),
            ("w5xde_peers_connected", "Outgoing streams connected", reading.peers_connected),
            ("w5xde_unacked_batches", "Batches in replay windows", extras.unacked_batches),
            (
                "w5xde_socket_send_buffer_bytes",
                "Effective SO_SNDBUF",
                sizes.send if sizes else 0,
            ),
            (
                "w5xde_socket_receive_buffer_bytes",
                "Effective SO_RCVBUF",
                sizes.receive if sizes else 0,
            ),
        ]
        for name, text, value in gauges:
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge
        yield from link_families(self._worker.link_figures())
        yield from link_metrics(self._worker.link_tuning())


#: Per-link series carry the label `peer` (the receiving worker's name): at most one
#: value per peer, and a worker has at most 128 peers (`peers x streamsPerPeer <= 128`).
LINK_LABELS = ["peer"]


def link_families(links: list[LinkFigures]) -> Iterator[Metric]:
    """`w5xde_link_*`: each outgoing link's counters and its ACK round trip."""
    counters: list[tuple[str, str, str]] = [
        ("w5xde_link_sent_batches", "Batches acknowledged by the peer, per link", "batches"),
        ("w5xde_link_sent_raw_bytes", "Raw bytes acknowledged by the peer, per link", "raw_bytes"),
        ("w5xde_link_sent_wire_bytes", "Bytes written to the link's sockets", "wire_bytes"),
        (
            "w5xde_link_resent_batches",
            "Batches sent again on the link after a reconnect",
            "resent_batches",
        ),
    ]
    for name, text, field in counters:
        family = CounterMetricFamily(name, text, labels=LINK_LABELS)
        for link in links:
            family.add_metric([link.report.peer], getattr(link.report, field))
        yield family
    connected = GaugeMetricFamily(
        "w5xde_link_streams_connected", "Connected streams of the link", labels=LINK_LABELS
    )
    rtt = SummaryMetricFamily(
        "w5xde_link_ack_rtt_seconds",
        "Send-to-acknowledgement round trip per link; quantiles over the rate window",
        labels=LINK_LABELS,
    )
    for link in links:
        report = link.report
        connected.add_metric([report.peer], report.streams_connected)
        for quantile, value in (("0.5", report.rtt_p50_seconds), ("0.99", report.rtt_p99_seconds)):
            rtt.add_sample(rtt.name, {"peer": report.peer, "quantile": quantile}, value)
        rtt.add_metric([report.peer], link.rtt_count, link.rtt_sum_seconds)
    yield connected
    yield rtt
    yield from link_state_families(links)


def link_state_families(links: list[LinkFigures]) -> Iterator[Metric]:
    """`w5xde_link_state` (1 for the link's current state, 0 for the others, the
    kube-state-metrics way) and `w5xde_link_stalls_total`."""
    state = GaugeMetricFamily(
        "w5xde_link_state",
        "The link's state as its sender sees it: 1 for the current one",
        labels=[*LINK_LABELS, "state"],
    )
    seconds = GaugeMetricFamily(
        "w5xde_link_state_seconds",
        "How long the link has been in its current state",
        labels=LINK_LABELS,
    )
    stalls = CounterMetricFamily(
        "w5xde_link_stalls",
        "Stalls (no ACK progress with data outstanding) the link's streams came out of",
        labels=LINK_LABELS,
    )
    for link in links:
        report = link.report
        for candidate in LinkState:
            state.add_metric(
                [report.peer, candidate.value], 1.0 if candidate is report.state else 0.0
            )
        seconds.add_metric([report.peer], report.state_seconds)
        stalls.add_metric([report.peer], link.stalls)
    yield state
    yield seconds
    yield stalls
    yield from link_tcp_families(links)


def link_tcp_families(links: list[LinkFigures]) -> Iterator[Metric]:
    """`w5xde_link_tcp_*`: the kernel's TCP_INFO of each link's sockets."""
    retransmits = CounterMetricFamily(
        "w5xde_link_tcp_retransmitted_segments",
        "TCP segments the kernel retransmitted on the link's sockets (TCP_INFO)",
        labels=LINK_LABELS,
    )
    gauges = [
        ("w5xde_link_tcp_cwnd_bytes", "Congestion windows of the link's sockets", "tcp_cwnd_bytes"),
        (
            "w5xde_link_tcp_srtt_seconds",
            "Largest smoothed RTT of the link's sockets",
            "tcp_srtt_seconds",
        ),
        (
            "w5xde_link_tcp_delivery_rate_bytes_per_second",
            "The kernel's delivery-rate samples of the link's sockets, summed",
            "tcp_delivery_rate_bytes_per_second",
        ),
    ]
    for link in links:
        retransmits.add_metric([link.report.peer], link.report.tcp_retransmitted_segments)
    yield retransmits
    for name, text, field in gauges:
        family = GaugeMetricFamily(name, text, labels=LINK_LABELS)
        for link in links:
            family.add_metric([link.report.peer], getattr(link.report, field))
        yield family


class _RefusalCollector:
    """Refusals on the metrics port, by reason (over a cap, past a deadline, hung up;
    for the report channel: unauthorized, replayed, stale resize)."""

    def __init__(
        self, refusals: RefusalLog, name: str = "w5xde_metrics_refused_connections"
    ) -> None:
        self._refusals = refusals
        self._name = name

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            self._name,
            "Connections or requests on the metrics/report port refused or cut, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(self._refusals.by_reason().items()):
            family.add_metric([reason], count)
        yield family


def link_metrics(links: dict[str, LinkTuningReport]) -> Iterator[Metric]:
    """Per peer (label `peer`): the level its streams use, raw/compressed batches, share."""
    level = GaugeMetricFamily(
        "w5xde_link_compression_level",
        "zstd level of the streams to the peer (0 = raw)",
        labels=["peer"],
    )
    raw_share = GaugeMetricFamily(
        "w5xde_link_raw_share_ratio", "Share of the batches to the peer sent raw", labels=["peer"]
    )
    share = GaugeMetricFamily(
        "w5xde_link_sent_share_ratio",
        "Share of this worker's acknowledged raw bytes that went to the peer",
        labels=["peer"],
    )
    send = GaugeMetricFamily(
        "w5xde_link_send_bytes", "Bytes gathered per sendmsg to the peer", labels=["peer"]
    )
    raw = CounterMetricFamily(
        "w5xde_link_raw_batches", "Batches to the peer sent raw", labels=["peer"]
    )
    compressed = CounterMetricFamily(
        "w5xde_link_compressed_batches", "Batches to the peer sent compressed", labels=["peer"]
    )
    switches = CounterMetricFamily(
        "w5xde_link_level_switches",
        "Level changes of level: auto on the peer's streams",
        labels=["peer"],
    )
    for peer, link in links.items():
        level.add_metric([peer], link.level)
        raw_share.add_metric([peer], link.raw_share)
        share.add_metric([peer], link.share)
        send.add_metric([peer], link.send_bytes)
        raw.add_metric([peer], link.raw_batches)
        compressed.add_metric([peer], link.compressed_batches)
        switches.add_metric([peer], link.level_switches)
    yield from (level, raw_share, share, send, raw, compressed, switches)


class MetricsServer:
    """The metrics port: one selector thread and a small fixed pool (`http_serving`)."""

    def __init__(
        self,
        collector: object,
        ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        report: ReportEndpoint | None = None,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        registry = telemetry.standard_registry("worker")
        registry.register(collector)  # type: ignore[arg-type]
        self.refusals = RefusalLog(log, "metrics connections")
        registry.register(_RefusalCollector(self.refusals))
        if report is not None:
            registry.register(_RefusalCollector(report.refusals, "w5xde_report_refused_requests"))
        self._server = HttpLoop(
            host, port, _Routes(registry, ready, healthy, report), self.refusals
        )
        self.port = self._server.port

    @classmethod
    def for_worker(
        cls, worker: Worker, host: str, port: int, *, report: ReportEndpoint | None = None
    ) -> MetricsServer:
        return cls(
            WorkerCollector(worker), worker.ready, host, port, report=report, healthy=worker.healthy
        )

    @property
    def alive(self) -> bool:
        return self._server.alive

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


class _Routes(http_serving.Routes):
    """Probes inline; the scrape and the operator's signed requests on the pool."""

    def __init__(
        self,
        registry: Any,
        ready: Callable[[], bool],
        healthy: Callable[[], bool],
        report: ReportEndpoint | None,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._healthy = healthy
        self._report = report

    def inline(self, request: Request) -> Response | None:
        if request.method != "GET":
            return None
        if request.path == "/healthz":
            up = self._healthy()
            return Response(200 if up else 503, b"ok\n" if up else b"broken\n")
        if request.path == "/readyz":
            up = self._ready()
            return Response(200 if up else 503, b"ready\n" if up else b"not ready\n")
        return None

    def urgent(self, request: Request) -> bool:
        return auth.AUTHORIZATION_HEADER.lower() in request.headers

    def max_body(self, request: Request) -> int:
        return MAX_CERTIFICATE_BYTES if request.method == "PUT" else 0

    def answer(self, request: Request) -> Response:
        report = self._report
        signature = request.headers.get(auth.AUTHORIZATION_HEADER.lower())
        if request.method == "GET":
            if request.path == "/metrics":
                return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
            if report is not None and is_report_path(request.target):
                return _response(report.answer("GET", request.target, signature))
        elif request.method == "PUT" and report is not None:
            if is_certificate_path(request.target):
                return _response(
                    report.install_certificate(request.target, signature, request.body)
                )
            if is_resize_path(request.target):
                return _response(report.resize(request.target, signature))
        return Response(404, b"not found\n")


def _response(answer: Answer) -> Response:
    return Response(answer.status, answer.body, answer.content_type, answer.headers)
