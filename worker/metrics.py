"""`/metrics`, `/healthz`, `/readyz` and `/report` on the metrics port.

The collector reads the worker's counters at scrape time, so the hot path never
touches a Prometheus object.  `/report` is the operator's (HMAC-authenticated, see
`report_endpoint`); the rest is for Prometheus and the kubelet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from w5xde.contract import auth, telemetry
from w5xde.contract.report import LinkTuningReport
from w5xde.worker.report_endpoint import ReportEndpoint, is_report_path
from w5xde.worker.runtime import Worker, current_rss_bytes

#: A client that sends nothing for this long is dropped (no thread pinned forever).
REQUEST_TIMEOUT_S = 10.0


class WorkerCollector:
    """Exposes one worker's figures as `w5xde_*` metrics."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        received, sent = self._worker.totals()
        extras = self._worker.extras()
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
                "Connections refused by the handshake",
                extras.rejected_connections,
            ),
        ]
        for name, text, value in counters:
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        sizes = self._worker.buffer_sizes()
        gauges: list[tuple[str, str, float]] = [
            ("w5xde_rss_bytes", "Resident set size", current_rss_bytes()),
            ("w5xde_peers_connected", "Outgoing streams connected", self._worker.peers_connected()),
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
        yield from link_metrics(self._worker.link_tuning())


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
    sent = CounterMetricFamily(
        "w5xde_link_sent_raw_bytes", "Raw bytes the peer acknowledged", labels=["peer"]
    )
    for peer, link in links.items():
        level.add_metric([peer], link.level)
        raw_share.add_metric([peer], link.raw_share)
        share.add_metric([peer], link.share)
        send.add_metric([peer], link.send_bytes)
        raw.add_metric([peer], link.raw_batches)
        compressed.add_metric([peer], link.compressed_batches)
        switches.add_metric([peer], link.level_switches)
        sent.add_metric([peer], link.sent_raw_bytes)
    yield from (level, raw_share, share, send, raw, compressed, switches, sent)


class MetricsServer:
    """A small threaded HTTP server in a daemon thread."""

    def __init__(
        self,
        collector: object,
        ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        report: ReportEndpoint | None = None,
    ) -> None:
        registry = telemetry.standard_registry("worker")
        registry.register(collector)  # type: ignore[arg-type]

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._answer(200, b"ok\n", "text/plain")
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

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @classmethod
    def for_worker(
        cls, worker: Worker, host: str, port: int, *, report: ReportEndpoint | None = None
    ) -> MetricsServer:
        return cls(WorkerCollector(worker), worker.ready, host, port, report=report)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
