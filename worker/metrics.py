"""`/metrics`, `/healthz`, `/readyz` and `/report` on the metrics port.

The collector reads the worker's counters at scrape time, so the hot path never
touches a Prometheus object.  `/report` is the operator's (HMAC-authenticated, see
`report_endpoint`); the rest is for Prometheus and the kubelet.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from w5xde.worker.links import LinkFigures
from w5xde.worker.refusals import RefusalLog
from w5xde.worker.report_endpoint import ReportEndpoint, is_certificate_path, is_report_path
from w5xde.worker.reporting import cpu_cost, current_rss_bytes, worker_extras
from w5xde.worker.runtime import Worker

log = logging.getLogger("w5xde.metrics")

#: A client that sends nothing for this long is dropped (no thread pinned forever).
REQUEST_TIMEOUT_S = 10.0
#: A whole request, however it trickles, is cut after this long.
REQUEST_DEADLINE_S = 15.0
#: Requests served at once; beyond this a connection is closed at once and counted.
MAX_CONNECTIONS = 16


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
            (
                "w5xde_rejected_connections",
                "Incoming data connections refused: failed handshakes, over the caps",
                extras.refused_connections,
            ),
            (
                "w5xde_protocol_errors",
                "Streams closed because the peer broke the protocol",
                received.protocol_errors + sent.protocol_errors,
            ),
        ]
        for name, text, value in counters:
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        sizes = reading.buffer_sizes
        cost = cpu_cost(reading.rates)
        gauges: list[tuple[str, str, float]] = [
            (
                "w5xde_cpu_seconds_per_gigabyte",
                "Process CPU seconds per GB of raw data received, over the rate window",
                cost.total,
            ),
            (
                "w5xde_compression_cpu_seconds_per_gigabyte",
                "Of that, seconds in compression and decompression",
                cost.compression,
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
    """The metrics server's own refusals (over the cap, past the deadline, hung up)."""

    def __init__(self, refusals: RefusalLog) -> None:
        self._refusals = refusals

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "w5xde_metrics_refused_connections",
            "Connections to the metrics/report port refused or cut",
        )
        family.add_metric([], self._refusals.total)
        yield family


class BoundedHTTPServer(ThreadingHTTPServer):
    """At most `MAX_CONNECTIONS` requests at once, each cut at `REQUEST_DEADLINE_S`.

    The standard server starts a thread per connection without a cap and prints a
    traceback for every client that hangs up; neither is acceptable on a port anyone
    in the cluster network can reach.
    """

    daemon_threads = True
    #: The listen backlog: a burst of scrapes and probes waits here, not in SYN retries.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: Any, refusals: RefusalLog) -> None:
        self.refusals = refusals
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._active: dict[socket.socket, float] = {}
        self._active_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refusals.refused("over the connection cap", f"{MAX_CONNECTIONS} requests")
            self.shutdown_request(request)
            return
        with self._active_lock:
            self._active[request] = time.monotonic() + REQUEST_DEADLINE_S
        try:
            super().process_request(request, client_address)
        except RuntimeError as error:  # no thread to be had (pids limit): refuse this one
            self._done(request)
            self.refusals.refused("no thread", str(error))
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._active_lock:
            if self._active.pop(request, None) is None:
                return
        self._slots.release()

    def cut_overdue(self) -> None:
        """Shut the sockets of requests past their deadline (their threads then end)."""
        now = time.monotonic()
        with self._active_lock:
            overdue = [sock for sock, deadline in self._active.items() if deadline < now]
        for sock in overdue:
            self.refusals.refused("request deadline", f"not done in {REQUEST_DEADLINE_S:g} s")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or stalls is counted, not printed as a traceback."""
        self.refusals.refused("client error", f"{client_address[0]}")


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
    """A small threaded HTTP server in a daemon thread, bounded (`BoundedHTTPServer`)."""

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

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    up = healthy()
                    self._answer(200 if up else 503, b"ok\n" if up else b"broken\n")
                elif self.path == "/readyz":
                    up = ready()
                    self._answer(200 if up else 503, b"ready\n" if up else b"not ready\n")
                elif report is not None and is_report_path(self.path):
                    answer = report.answer(
                        "GET", self.path, self.headers.get(auth.AUTHORIZATION_HEADER)
                    )
                    self._answer(answer.status, answer.body, answer.content_type, answer.headers)
                else:
                    self._answer(404, b"not found\n")

            def do_PUT(self) -> None:
                if report is None or not is_certificate_path(self.path):
                    self._answer(404, b"not found\n")
                    return
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > MAX_CERTIFICATE_BYTES:
                    self._answer(413, b'{"error":"body too large"}', "application/json")
                    return
                body = self.rfile.read(int(length))
                answer = report.install_certificate(
                    self.path, self.headers.get(auth.AUTHORIZATION_HEADER), body
                )
                self._answer(answer.status, answer.body, answer.content_type, answer.headers)

            def _answer(
                self,
                code: int,
                body: bytes,
                kind: str = "text/plain",
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes are not worth a log line."""

        self._server = BoundedHTTPServer((host, port), Handler, self.refusals)
        self.port = self._server.server_address[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._reaper = threading.Thread(target=self._reap, name="metrics-reaper", daemon=True)

    @classmethod
    def for_worker(
        cls, worker: Worker, host: str, port: int, *, report: ReportEndpoint | None = None
    ) -> MetricsServer:
        return cls(
            WorkerCollector(worker), worker.ready, host, port, report=report, healthy=worker.healthy
        )

    def start(self) -> None:
        self._thread.start()
        self._reaper.start()

    def _reap(self) -> None:
        while not self._stopped.wait(1.0):
            self._server.cut_overdue()

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
