"""The Worker: one listener, the outgoing streams its topology asks for, and its report.

Everything the operator and `w5xde local` see goes through `report()` (a pure read:
rates come from a window a sampler thread fills); the cluster shape changes only
through `resize()`.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from pathlib import Path

from w5xde.api.v1alpha1 import Balance, Source
from w5xde.contract.report import (
    CertificateReport,
    LinkTuningReport,
    WorkerExtras,
    WorkerReport,
)
from w5xde.worker import links, reporting
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import ReceiveCounters, SendCounters
from w5xde.worker.credits import EvenShares
from w5xde.worker.handshake import Identity
from w5xde.worker.keyring import KeyRing
from w5xde.worker.pacing import RateSplit
from w5xde.worker.producer import CompressionPool, compression_threads, uses_pool
from w5xde.worker.rates import RateWindow, Snapshot
from w5xde.worker.receiver import IncomingRegistry, ReceiveLoop
from w5xde.worker.sender import DRAIN_TIMEOUT_S, OutgoingStream, ReplayBudget, Unacked
from w5xde.worker.sockets import BufferSizes, tune
from w5xde.worker.sources import BatchSource, PoolSource, open_source, synthetic_pool
from w5xde.worker.tls import TlsIdentity
from w5xde.worker.topology import stream_keys, targets

log = logging.getLogger("w5xde.worker")

#: networkSeconds / compressionSeconds are reported per this window (the seed's unit).
#: Rates are over this window unless the config's reporting interval says otherwise.
DEFAULT_RATE_WINDOW_S = links.DEFAULT_RATE_WINDOW_S
#: How often the sampler thread snapshots the counters for the rate window.
SAMPLE_EVERY_S = 0.5
#: How long past the drain's own bound a stopping worker waits for a stream to end.
STOP_SLACK_S = 2.0
#: Well above the connections a reconnecting flood keeps queued (see http_serving).
_LISTEN_BACKLOG = 1024
#: A worker whose accept path or a stream thread died fails liveness after this long.
HEALTH_GRACE_S = 10.0


class Worker:
    """A running worker; thread-safe `report()`, `resize()`, `ready()` and `stop()`."""

    def __init__(
        self,
        config: WorkerConfig,
        key: bytes,
        tls: TlsIdentity | None = None,
        keyring: KeyRing | None = None,
    ) -> None:
        self.config = config
        self.tls = tls if tls is not None else tls_identity(config)
        self.keyring = keyring if keyring is not None else KeyRing(key)
        self._identity = Identity(config.cluster_id, config.name, key, self.tls, self.keyring)
        self._index = config.index()
        self._workers = len(config.peer_list())
        #: One pool for every stream (each slices it at its own offset).
        self._pool = (
            PoolSource(synthetic_pool(config.workload.profile), config.workload.batch_bytes)
            if config.workload.source == Source.SYNTHETIC
            else None
        )
        if config.workload.source == Source.FILE:
            open_source(config.workload, None).close()  # fails early, naming workload.path
        self._registry = IncomingRegistry()
        self._streams: dict[tuple[str, int], OutgoingStream] = {}
        #: One replay budget for all outgoing streams, re-shared whenever they change.
        self._budget = ReplayBudget()
        #: With `compression.threads` > 1, one pool of compression threads for all streams.
        self._compression_pool = (
            CompressionPool(config.compression, compression_threads(config.compression))
            if uses_pool(config.workload, config.compression)
            else None
        )
        #: balance: even: the worker's streams keep within a share of each other.
        self._shares = EvenShares() if config.workload.balance is Balance.EVEN else None
        #: The rate limit, re-split among the flowing streams on every change.
        rate = config.workload.rate_limit_bytes_per_second
        self._rate_split = RateSplit(rate) if rate > 0 else None
        self._retired = SendCounters()
        self._orphans: list[Unacked] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._listen_sizes: BufferSizes | None = None
        self._receive_loop: ReceiveLoop | None = None
        self._started = time.monotonic()
        #: Tells the operator this run's counters start from zero (see WorkerReport).
        self._incarnation = os.urandom(6).hex()
        window = links.rate_window_seconds(config)
        self._rates = RateWindow(
            window,
            Snapshot(self._started, ReceiveCounters(), SendCounters(), process_cpu_seconds()),
        )
        #: Per-link counters over the same window (each outgoing link's rates).
        self._links = links.LinkBook(window, self._started)
        self._sampler: threading.Thread | None = None
        self._finished = threading.Event()
        self._broken_since: float | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Listen, then connect the outgoing streams."""
        listener = socket.socket(
            socket.AF_INET6 if ":" in self.config.listen_host else socket.AF_INET,
            socket.SOCK_STREAM,
        )
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit the buffer sizes, which must be set before listen().
        self._listen_sizes = tune(listener, self.config.network)
        listener.bind((self.config.listen_host, self.config.listen_port()))
        listener.listen(_LISTEN_BACKLOG)
        self._listener = listener
        # One thread accepts and receives on every incoming connection (receiver.py).
        self._receive_loop = ReceiveLoop(
            listener,
            config=self.config,
            identity=self._identity,
            registry=self._registry,
            workers=self._workers,
        )
        self._receive_loop.start()
        self._sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        self._sampler.start()
        with self._lock:
            self._reconcile_streams()
        log.warning(
            "worker %s (index %d of %d) listening on %s:%d",
            self.config.name,
            self._index,
            self._workers,
            self.config.listen_host,
            self.config.listen_port(),
        )

    def finish(self, grace_seconds: float = 2.0) -> None:
        """End a bounded run: stop all traffic, keep the counters for the final report."""
        self.stop(grace_seconds)
        self._finished.set()

    def stop(self, grace_seconds: float = 2.0) -> None:
        """Drain the outgoing streams, give peers `grace_seconds` to finish, then close."""
        self._stopping.set()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.drain()
        # A stream blocked in a send to a peer that takes nothing (frozen, or stopping
        # itself) would hold the stop for the socket's timeout (30 s): past the drain's own
        # bound it is cut, so a SIGTERM ends the worker in seconds, not at the kubelet's
        # SIGKILL. What it had not delivered stays unacknowledged in the final report.
        drained_by = time.monotonic() + DRAIN_TIMEOUT_S + STOP_SLACK_S
        for stream in streams:
            stream.join(max(0.0, drained_by - time.monotonic()))
        for stream in streams:
            if stream.is_alive():
                log.warning(
                    "stream to %s (%d) did not drain in time; cut", stream.peer, stream.stream
                )
                stream.abort()
        for stream in streams:
            stream.join()
        deadline = time.monotonic() + grace_seconds
        while self._registry.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self._registry.close_all()
        if self._receive_loop is not None:
            self._receive_loop.stop()
        if self._compression_pool is not None:
            self._compression_pool.shutdown()

    def _sample_loop(self) -> None:
        while not self._finished.wait(SAMPLE_EVERY_S):
            self._rates.add(self._snapshot())
            with self._lock:
                streams = list(self._streams.values())
                self._resplit_rate()
            self._links.sample(time.monotonic(), streams)
            if self.tls is not None:
                self.tls.refresh()
            self.keyring.refresh()

    def _snapshot(self) -> Snapshot:
        received, sent = self.totals()
        return Snapshot(time.monotonic(), received, sent, process_cpu_seconds())

    # --- shape -----------------------------------------------------------------------

    def resize(self, workers: int) -> None:
        """Re-form the streams for `workers` workers; unacknowledged batches move, never vanish."""
        with self._lock:
            if workers == self._workers or self._stopping.is_set():
                return
            log.warning("resizing from %d to %d workers", self._workers, workers)
            self._workers = workers
            self._reconcile_streams()
            if self._receive_loop is not None:
                self._receive_loop.resize(workers)

    def _reconcile_streams(self) -> None:
        peers = self.config.peer_list(self._workers)
        workload = self.config.workload
        wanted = stream_keys(
            peers,
            targets(workload.topology, self._index, len(peers), workload.mesh_degree),
            workload.streams_per_peer,
        )
        gone = [key for key in self._streams if key not in wanted]
        unacked: list[Unacked] = list(self._orphans)
        self._orphans.clear()
        for key in gone:
            self._streams[key].abort()
        for key in gone:
            stream = self._streams.pop(key)
            stream.join()
            unacked += stream.take_unacked()
            self._retired.add(stream.counters)
        self._budget.share_among(len(wanted))
        for position, key in enumerate(sorted(wanted - self._streams.keys())):
            peer, stream_index = key
            stream = OutgoingStream(
                config=self.config,
                identity=self._identity,
                peer=peer,
                stream=stream_index,
                source=self._source((self._index * 7919 + position * 104729) * 64),
                rate_split=self._rate_split,
                budget=self._budget,
                compression_pool=self._compression_pool,
                shares=self._shares,
            )
            self._streams[key] = stream
            stream.start()
        self._resplit_rate()
        if unacked:
            live = list(self._streams.values())
            if live:
                for position, frame in enumerate(unacked):
                    live[position % len(live)].handover.append(frame)
            else:
                self._orphans = unacked

    def _resplit_rate(self) -> None:
        """Share the rate limit among the streams that flow (all of them while none
        does yet): a stalled or lost peer's share goes to the live ones."""
        if self._rate_split is None:
            return
        streams = self._streams.values()
        flowing = sum(1 for stream in streams if stream.progress.flowing())
        self._rate_split.split(flowing or len(self._streams))

    def _source(self, start: int) -> BatchSource:
        if self._pool is not None:
            return self._pool.at(start)
        return open_source(self.config.workload, None, start=start)

    # --- state -----------------------------------------------------------------------

    def ready(self) -> bool:
        """Listening, and some outgoing stream has connected at least once (or there is
        nothing to connect to).

        Once joined, a worker stays ready when its peers go away: readiness that followed
        the peers would mark the healthy side of a frozen pair not ready too (READY 0/2
        for one frozen worker) and cascade through a rollout; lost peers are what the
        links' states (`Stalled`, `Unreachable`, `Refused`) report.
        """
        if self._listener is None or self._receive_loop is None or self._broken_parts():
            return False
        with self._lock:
            streams = list(self._streams.values())
        return not streams or any(stream.ever_connected for stream in streams)

    def replay_bytes(self) -> int:
        """Payload bytes held for replay by all outgoing streams (bounded by the budget)."""
        with self._lock:
            streams = list(self._streams.values())
        return sum(stream.unacked_bytes for stream in streams)

    def streams(self) -> tuple[int, int]:
        """(outgoing streams connected, incoming streams connected) right now."""
        with self._lock:
            outgoing = sum(1 for stream in self._streams.values() if stream.connected)
        return outgoing, self._registry.connected

    def peers_connected(self) -> int:
        """Peers with at least one connected outgoing stream."""
        with self._lock:
            return len({stream.peer for stream in self._streams.values() if stream.connected})

    def buffer_sizes(self) -> BufferSizes | None:
        """What the kernel granted on an outgoing stream, else on the listener."""
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            if stream.buffer_sizes is not None:
                return stream.buffer_sizes
        return self._listen_sizes

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def workers(self) -> int:
        """The worker count this worker streams for (follows `resize()`)."""
        return self._workers

    def totals(self) -> tuple[ReceiveCounters, SendCounters]:
        """(received, sent) cumulative counters over every connection this worker has had."""
        received = self._registry.total()
        with self._lock:
            sent = self._retired.copy()
            streams = list(self._streams.values())
        for stream in streams:
            sent.add(stream.counters)
        return received, sent

    def reading(self) -> reporting.Reading:
        """One reading of everything the report, the extras and the metrics show: the
        counters once, the rates over the window from that same snapshot."""
        now = self._snapshot()
        with self._lock:
            streams = list(self._streams.values())
            workers = self._workers
            unacked = sum(stream.unacked for stream in streams) + len(self._orphans)
        return reporting.Reading(
            name=self.config.name,
            node=self.config.node,
            incarnation=self._incarnation,
            generated_at=time.time(),
            workers=workers,
            finished=self.finished,
            now=now,
            rates=self._rates.rates(now),
            requested_buffer_bytes=self.config.network.fixed_buffer_bytes,
            buffer_sizes=self.buffer_sizes(),
            peers_connected=self.peers_connected(),
            incoming_streams=self._registry.connected,
            outgoing_streams_connected=sum(1 for stream in streams if stream.connected),
            unacked_batches=unacked,
            refused_connections=self._registry.refused_connections,
            certificate=self._certificate_report(),
            links=[link.report for link in self.link_figures()],
            lost_from=links.lost_from(self._lost_by_sender()),
            key_fingerprint=self.keyring.fingerprint,
            link_tuning=self.link_tuning(),
        )

    def extras(self) -> WorkerExtras:
        """Figures beyond the report that tests and `w5xde local` look at."""
        return reporting.worker_extras(self.reading())

    def link_figures(self) -> list[links.LinkFigures]:
        """Each outgoing link (one per peer) now, rates over the report's window."""
        with self._lock:
            streams = list(self._streams.values())
            workers = self._workers
        names = links.peer_names(self.config.name, self.config.peer_list(workers))
        return self._links.figures(time.monotonic(), streams, names)

    def report(self) -> WorkerReport:
        """Cumulative counters now, rates over the last window; reading moves nothing."""
        return reporting.worker_report(self.reading())

    def refusal_reasons(self) -> dict[str, int]:
        """Incoming data connections refused so far, by reason (the metric's label)."""
        return self._registry.refusals.by_reason()

    def cpu_cost(self) -> reporting.CpuCost:
        """CPU seconds per GB received over the rate window (the metrics' reading)."""
        return reporting.cpu_cost(self._rates.rates(self._snapshot()))

    def _lost_by_sender(self) -> dict[str, int]:
        with self._registry.lock:
            return dict(self._registry.lost_by_sender)

    def _certificate_report(self) -> CertificateReport | None:
        if self.tls is None:
            return None
        request = self.tls.certificate_request()
        expires = self.tls.not_after
        return CertificateReport(
            not_after=round(expires.timestamp(), 3) if expires else 0,
            request=request.decode() if request else None,
        )

    def healthy(self) -> bool:
        """False once the accept path or a stream thread died for longer than a grace period.

        A dead accept path leaves a worker that answers HTTP but delivers nothing; only a
        restart by the kubelet brings it back, so liveness must say so.
        """
        broken = self._broken_parts()
        now = time.monotonic()
        if not broken:
            self._broken_since = None
            return True
        if self._broken_since is None:
            self._broken_since = now
            log.error("worker is broken: %s", ", ".join(broken))
        return now - self._broken_since < HEALTH_GRACE_S

    def _broken_parts(self) -> list[str]:
        if self._stopping.is_set() or self._receive_loop is None:
            return []
        broken = [] if self._receive_loop.alive else ["the accept and receive path died"]
        with self._lock:
            dead = [key for key, stream in self._streams.items() if not stream.is_alive()]
        broken += [f"stream {peer}/{index} died" for peer, index in dead]
        return broken

    def link_tuning(self) -> dict[str, LinkTuningReport]:
        """Per peer: the level its streams use, raw/compressed share, its share of the data."""
        with self._lock:
            streams = list(self._streams.values())
        by_peer: dict[str, list[OutgoingStream]] = {}
        for stream in streams:
            by_peer.setdefault(stream.peer, []).append(stream)
        # One reading per stream: the stream threads keep counting while this runs, and a
        # share from a later reading over an earlier total came out above 1 (a 24-worker
        # run's report failed validation and the worker exited at start).
        sent_by_stream = {id(stream): stream.counters.raw_bytes for stream in streams}
        total = sum(sent_by_stream.values())
        # Keyed by the peer's worker name, as the report's `links` and the metrics are.
        names = links.peer_names(self.config.name, self.config.peer_list(self._workers))
        tuning = {}
        for peer, group in sorted(by_peer.items()):
            figures = [stream.tuning.figures() for stream in group]
            raw = sum(item.raw_batches for item in figures)
            compressed = sum(item.compressed_batches for item in figures)
            sent = sum(sent_by_stream[id(stream)] for stream in group)
            tuning[names.get(peer, peer)] = LinkTuningReport(
                level=figures[0].level,
                auto=figures[0].auto,
                raw_batches=raw,
                compressed_batches=compressed,
                raw_share=round(raw / (raw + compressed), 4) if raw + compressed else 0.0,
                level_switches=sum(item.level_switches for item in figures),
                sent_raw_bytes=sent,
                share=round(sent / total, 4) if total else 0.0,
                send_bytes=figures[0].send_bytes,
                buffer_floor_bytes=max(item.buffer_floor for item in figures),
            )
        return tuning


def tls_identity(config: WorkerConfig) -> TlsIdentity | None:
    """The identity the config names: loaded from files, or waiting for the operator."""
    tls = config.tls
    if tls is None:
        return None
    if tls.source == "files":
        assert tls.certificate_file is not None
        assert tls.key_file is not None
        return TlsIdentity.from_files(
            config.name, Path(tls.certificate_file), Path(tls.key_file), Path(tls.ca_file)
        )
    return TlsIdentity(config.name, Path(tls.ca_file))


def process_cpu_seconds() -> float:
    """User + system CPU of this process so far, every thread (the kernel's count)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
