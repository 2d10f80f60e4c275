"""One outgoing stream: source -> compress -> frame -> coalesced sendmsg, with a replay window.

Each stream is one thread that owns its socket, window and counters.  Frames stay in
the window until the peer acknowledges them; after a reconnect the whole window is
sent again (the receiver drops what it already has), so a broken connection or a
restarted peer never loses a batch.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

from w5xde.api.v1alpha1 import Balance
from w5xde.worker import credits, links, protocol
from w5xde.worker.codec import wire_context
from w5xde.worker.config import WorkerConfig, split_host_port
from w5xde.worker.counters import SendCounters
from w5xde.worker.handshake import (
    HandshakeTimeoutError,
    Identity,
    NotEnrolledError,
    client_handshake,
    expected_peer,
)
from w5xde.worker.pacing import RateLimiter, RateSplit
from w5xde.worker.producer import CompressionPool, KeptBatch, make_producer
from w5xde.worker.progress import RECONNECT_AFTER_S, StreamProgress, stall_after_seconds
from w5xde.worker.protocol import HEADER, HEADER_BYTES, CodecId, FrameType, ProtocolError
from w5xde.worker.sockets import BufferSizes, interrupt, tune
from w5xde.worker.sources import BatchSource, FileBatch, SourceError
from w5xde.worker.stream_tuning import StreamTuner
from w5xde.worker.tcp_info import TcpLedger
from w5xde.worker.tls_channel import TlsChannel

log = logging.getLogger("w5xde.sender")

#: Below the kernel's IOV_MAX (1024): two buffers (header, payload) per frame.
MAX_IOV = 512
#: The replay budget of one worker: unacknowledged frames kept for a resend, bounded both
#: ways and shared equally by the worker's outgoing streams (`ReplayBudget`).
BUDGET_BYTES = 16 * 1024 * 1024
BUDGET_FRAMES = protocol.REPLAY_WINDOW_FRAMES
#: However many streams share the budget, each may keep this much (and always one frame).
MIN_WINDOW_BYTES = 64 * 1024
MIN_WINDOW_FRAMES = 64
#: The window of a stream given no worker budget (a stream on its own): the whole budget.
WINDOW_BYTES = BUDGET_BYTES
WINDOW_FRAMES = BUDGET_FRAMES
CONNECT_TIMEOUT_S = 3.0
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
DRAIN_TIMEOUT_S = 5.0
#: A stream's socket gives up on a receiver that takes nothing for this long, TLS or
#: not: a peer on a frozen node keeps its connections open, and a send blocked on one
#: forever would never reconnect to the pod that replaces it.
SOCKET_TIMEOUT_S = RECONNECT_AFTER_S
PROTOCOL_ERROR_BACKOFF_S = 1.0
_ACK_WAIT_S = 0.25
#: A paced stream notices a drain or an abort within this long.
_PACE_POLL_S = 0.05


@dataclass(slots=True)
class Unacked:
    """A frame in the replay window (or handed to another stream after a resize)."""

    sequence: int
    header: bytes
    #: What the window keeps: the payload sent, or (`raw`) the batch itself (or where
    #: its file source can read it again).
    payload: bytes | memoryview | FileBatch
    raw_length: int
    #: `context: stream`: `payload` is the raw batch, recompressed into each new
    #: connection's context on a replay (a stream payload decodes only in its own).
    raw: bool = False
    #: What it counts against the replay budget (set by the stream; see `_produce`).
    counted: int = -1

    def budget_bytes(self) -> int:
        return self.counted if self.counted >= 0 else len(self.payload)


class ReplayBudget:
    """One replay-window budget per worker, shared equally by its outgoing streams.

    A stream stops producing while its window holds its share (bytes or frames) and
    waits for acknowledgements; a stream with an empty window may always send one frame,
    whatever its size, so a batch larger than a share still goes out.  The worker's
    unacknowledged payload is therefore at most about `total_bytes` (plus one frame per
    stream, and `MIN_WINDOW_BYTES` per stream beyond 256 streams), whatever the peer count:
    a lone stream gets the whole budget, 23 all-to-all streams about 700 KiB each.
    """

    def __init__(self, total_bytes: int = BUDGET_BYTES, total_frames: int = BUDGET_FRAMES) -> None:
        self.total_bytes = total_bytes
        self.total_frames = total_frames
        self.streams = 0
        self.window_bytes = total_bytes
        self.window_frames = total_frames

    def share_among(self, streams: int) -> None:
        """Split the budget among `streams` streams; the streams read the new share at once."""
        count = max(1, streams)
        self.streams = streams
        self.window_bytes = max(MIN_WINDOW_BYTES, self.total_bytes // count)
        self.window_frames = max(MIN_WINDOW_FRAMES, self.total_frames // count)

    def full(self, frames: int, payload_bytes: int) -> bool:
        """Whether a window holding this much must wait for acknowledgements first."""
        return frames > 0 and (frames >= self.window_frames or payload_bytes >= self.window_bytes)


class StreamStopped(Exception):  # noqa: N818 - a signal, not a failure
    """The stream was asked to end (resize or shutdown) while it was blocked."""


class OutgoingStream(threading.Thread):
    """Streams batches to one peer over one TCP connection, reconnecting with backoff."""

    def __init__(
        self,
        *,
        config: WorkerConfig,
        identity: Identity,
        peer: str,
        stream: int,
        source: BatchSource,
        rate_bytes_per_second: float = 0,
        rate_split: RateSplit | None = None,
        budget: ReplayBudget | None = None,
        compression_pool: CompressionPool | None = None,
        shares: credits.EvenShares | None = None,
    ) -> None:
        super().__init__(name=f"send-{peer}-{stream}", daemon=True)
        self.peer = peer
        self.stream = stream
        self.counters = SendCounters()
        #: ACK round trips of this stream (the per-link figures, `links.py`).
        self.acks = links.AckClock(links.rate_window_seconds(config))
        self.buffer_sizes: BufferSizes | None = None
        #: The address the last connect reached (`LinkReport.peer_address`).
        self.remote_address = ""
        #: Frames given to this stream by a stream that went away; re-framed and counted resent.
        self.handover: deque[Unacked] = deque()
        self._config = config
        self._identity = identity
        #: The worker's rate limit split among its flowing streams (None: no limit).
        self._rate_split = rate_split
        if rate_split is None and rate_bytes_per_second > 0:
            self._rate_split = RateSplit(rate_bytes_per_second)
        #: The kernel's TCP facts of this stream's connections (read on the tuning tick).
        self.tcp = TcpLedger()
        #: Connected, flowing, stalled, unreachable: readable from any thread.
        self.progress = StreamProgress(
            stall_after_seconds(
                config.workload.batch_bytes,
                self._rate_split.per_stream if self._rate_split is not None else 0,
            )
        )
        self._budget = budget if budget is not None else ReplayBudget(WINDOW_BYTES, WINDOW_FRAMES)
        self._producer = make_producer(
            source, config.workload, config.compression, compression_pool
        )
        self._session = int.from_bytes(os.urandom(8), "little")
        self._window: deque[Unacked] = deque()
        self._window_bytes = 0
        self._next_sequence = 0
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._ack_buffer = bytearray(64 * HEADER_BYTES)
        self._ack_view = memoryview(self._ack_buffer)
        self._ack_filled = 0
        self._draining = threading.Event()
        self._aborted = threading.Event()
        self._sock: socket.socket | None = None
        #: Handshakes refused in a row (a key rotation alternates the key it proves with).
        self._refused = 0
        self._verbose = logging.getLogger("w5xde").isEnabledFor(logging.INFO)
        #: Level (auto), send size and buffer floor adapted to the link (stream_tuning.py).
        self.tuning = StreamTuner(
            self._producer,
            config.compression,
            config.network,
            config.workload.batch_bytes,
            self.counters,
        )
        #: balance: capacity: the receiver's credit (unacked payload bytes allowed).
        self._credit: int | None = (
            credits.INITIAL_CREDIT_BYTES if config.workload.balance is Balance.CAPACITY else None
        )
        self._data_flags = protocol.FLAG_WANTS_CREDIT if self._credit is not None else 0
        #: balance: even: this stream's place among its worker's streams.
        self._shares = shares
        self._slot = shares.join(self.progress) if shares is not None else None
        self._slot_seen = 0

    # --- control, from other threads -------------------------------------------------

    def drain(self) -> None:
        """Stop producing, wait (bounded) for the window to be acknowledged, then close."""
        self._draining.set()

    def abort(self) -> None:
        """End now (the peer left the cluster); the window stays for `take_unacked`."""
        self._aborted.set()
        self._draining.set()
        sock = self._sock
        if sock is not None:
            interrupt(sock)

    def take_unacked(self) -> list[Unacked]:
        """The frames the peer never acknowledged; call only after the thread ended."""
        frames = list(self._window) + list(self.handover)
        self._window.clear()
        self.handover.clear()
        self._window_bytes = 0
        return frames

    @property
    def connected(self) -> bool:
        return self.progress.connected

    @property
    def ever_connected(self) -> bool:
        return self.progress.ever_connected

    @property
    def unacked(self) -> int:
        return len(self._window)

    @property
    def unacked_bytes(self) -> int:
        """Payload bytes in the replay window (what the worker's budget bounds)."""
        return self._window_bytes

    # --- the thread ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
            self.progress.finished()
        except SourceError as error:
            # The stream ends (the worker reports it broken, naming it); its data cannot
            # be sent as it was, and a traceback would say less than the error does.
            log.error("stream to %s (%d) stopped: %s", self.peer, self.stream, error)
        finally:
            self._producer.close()
            if self._shares is not None and self._slot is not None:
                self._shares.leave(self._slot)

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._aborted.is_set():
            try:
                sock = self._connect()
            except (OSError, ProtocolError) as error:
                # A peer that never finishes the handshake (frozen, or its accept path
                # gone while its kernel still takes connections) is not reached; a peer
                # that answers and says no (wrong key, identity, context) refused.
                self.progress.connect_failed(
                    error,
                    refused=isinstance(error, ProtocolError)
                    and not isinstance(error, HandshakeTimeoutError),
                )
                # Peers start at different times: only a peer that stays away is worth a warning.
                log.log(
                    logging.INFO
                    if backoff < 1.0 or isinstance(error, NotEnrolledError)
                    else logging.WARNING,
                    "connect to %s (stream %d) failed: %s",
                    self.peer,
                    self.stream,
                    error,
                )
                if self._draining.is_set() or self._aborted.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_FIRST_S
            self._sock = sock
            self.progress.now_connected()
            self.tuning.connected(sock, self.counters)
            if isinstance(sock, TlsChannel):
                sock.counters = self.counters
            if self._shares is not None and self._slot is not None:
                self._shares.set_connected(self._slot, True)
            try:
                self._stream(sock)
                return
            except StreamStopped:
                return
            except (OSError, ProtocolError) as error:
                if self._aborted.is_set():
                    return
                self.progress.disconnected(error)
                if isinstance(error, (ProtocolError, ssl.SSLError)):
                    # A peer that breaks the protocol (or a TLS record that fails its MAC
                    # on the ACK direction) is not reconnected to at once.
                    self.counters.protocol_errors += 1
                    log.error(
                        "stream to %s (%d): protocol error: %s; reconnecting",
                        self.peer,
                        self.stream,
                        error,
                    )
                    self._aborted.wait(PROTOCOL_ERROR_BACKOFF_S)
                else:
                    log.warning(
                        "stream to %s (%d) broke: %s; reconnecting", self.peer, self.stream, error
                    )
                if self._draining.is_set() and not self._window:
                    return
            finally:
                self.progress.disconnected()
                if self._shares is not None and self._slot is not None:
                    self._shares.set_connected(self._slot, False)
                self._sock = None
                self._pending.clear()
                self._pending_bytes = 0
                self._ack_filled = 0
                self.tcp.connection_ended(sock)
                sock.close()

    def _connect(self) -> socket.socket:
        host, port = split_host_port(self.peer, field="peers")
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            self.buffer_sizes = tune(sock, self._config.network)
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(address)
            # What the peer's name resolved to: a pod IP, or a Service's ClusterIP.
            reached = sock.getpeername()
            self.remote_address = f"{reached[0]}:{reached[1]}"
            resume = self._window[0].sequence if self._window else self._next_sequence
            sock = client_handshake(
                sock,
                self._identity,
                stream=self.stream,
                session=self._session,
                resume_from=resume,
                peer=expected_peer(host),
                attempt=self._refused,
                context=wire_context(self._config.compression),
            )
        except BaseException as error:
            if isinstance(error, ProtocolError):
                self._refused += 1
            sock.close()
            raise
        self._refused = 0
        if isinstance(sock, TlsChannel):
            sock.settimeout(SOCKET_TIMEOUT_S)
        else:
            # The kernel's send timeout, not Python's: a Python timeout would make the
            # non-blocking ACK reads (MSG_DONTWAIT) wait for it too.
            seconds = int(SOCKET_TIMEOUT_S)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))
        self._producer.new_connection(tls=isinstance(sock, TlsChannel))
        return sock

    def _stream(self, sock: socket.socket) -> None:
        self.acks.forget()
        self._replay(sock)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        split = self._rate_split
        limiter = RateLimiter(split.per_stream) if split is not None else None
        tuning = self.tuning
        while not self._draining.is_set():
            if self._budget.full(len(self._window), self._window_bytes) or (
                self._credit is not None
                and credits.credit_exhausted(self._credit, self._window_bytes)
            ):
                self._flush(sock)
                self._read_acks(sock, poller, wait=True)
                self._give_up_if_stalled()
                self._maybe_tick(sock)
                continue
            raw_length = self._produce()
            if self._pending_bytes >= tuning.send_bytes or len(self._pending) >= MAX_IOV:
                self._flush(sock)
                # Acknowledgements are collected once per coalesced write, not per batch.
                self._read_acks(sock, poller, wait=False)
                self._maybe_tick(sock)
            if limiter is not None and split is not None:
                limiter.rate = split.per_stream
                delay = limiter.take(raw_length)
                if delay > 0:
                    self._flush(sock)
                    self._pace(sock, poller, delay)
                    self._maybe_tick(sock)
            # After every write, paced or coalesced: a paced stream flushes each batch
            # and never fills a coalesced write, and its share must still count (a
            # share counted only on coalesced writes froze its siblings for good).
            if self._slot is not None and not self._pending:
                self._wait_for_siblings(sock, poller)
        self._flush(sock)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self._window and time.monotonic() < deadline and not self._aborted.is_set():
            self._read_acks(sock, poller, wait=True)
        if self._aborted.is_set():
            raise StreamStopped
        sock.sendall(protocol.close_frame())

    def _pace(self, sock: socket.socket, poller: select.poll, delay: float) -> None:
        """Wait out a rate limit's delay, reading ACKs as they come (a paced stream rarely
        fills a coalesced write, and its ACK round trips would otherwise be the pacing gap)."""
        deadline = time.monotonic() + delay
        while not self._draining.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if poller.poll(min(remaining, _PACE_POLL_S) * 1000):
                self._read_acks(sock, poller, wait=False)

    def _give_up_if_stalled(self) -> None:
        """A stream whose peer has acknowledged nothing for `RECONNECT_AFTER_S` with data
        outstanding reconnects (and replays its window): the peer may be gone for good,
        replaced by a pod at a new address, while this connection looks open."""
        silent = self.progress.silent_seconds()
        if silent > RECONNECT_AFTER_S:
            raise TimeoutError(f"no acknowledgement for {silent:.0f} s with data outstanding")

    def _maybe_tick(self, sock: socket.socket) -> None:
        if time.monotonic() >= self.tuning.next_tick:
            self.tuning.tick(sock, self.counters)
            self.tcp.sample(sock)

    def _wait_for_siblings(self, sock: socket.socket, poller: select.poll) -> None:
        """balance: even: hold while this stream is a share ahead of its slowest sibling."""
        shares, slot = self._shares, self._slot
        assert shares is not None
        assert slot is not None
        # What this stream produced since the last write counts now (not per batch).
        produced = self.counters.produced_raw_bytes
        slot.produced += produced - self._slot_seen
        self._slot_seen = produced
        shares.advanced()
        while not shares.may_produce(slot) and not self._draining.is_set():
            self._flush(sock)
            self._read_acks(sock, poller, wait=False)
            self._maybe_tick(sock)
            started = time.perf_counter()
            shares.wait(0.02)
            waited = time.perf_counter() - started
            self.counters.network_seconds += waited
            self.counters.wait_seconds += waited

    def _replay(self, sock: socket.socket) -> None:
        """Send the whole window again on a new connection, in order, same sequences.

        Under `context: stream` each kept batch is recompressed into this connection's
        fresh context (the peer's decoder is new); its duplicates are decoded there too.
        """
        if not self._window:
            return
        self.counters.resent_batches += len(self._window)
        for frame in self._window:
            if frame.raw:
                compressed = self._producer.recompress(frame.payload)
                self.counters.compression_seconds += compressed.seconds
                header = protocol.pack_header(
                    FrameType.DATA,
                    CodecId(compressed.codec),
                    sequence=frame.sequence,
                    raw_length=frame.raw_length,
                    payload_length=len(compressed.payload),
                    crc32=compressed.crc32,
                    flags=self._data_flags | compressed.flags,
                )
                self._queue(header, compressed.payload)
            else:
                assert not isinstance(frame.payload, FileBatch)  # only kept under stream
                self._queue(frame.header, frame.payload)
            if len(self._pending) >= MAX_IOV or self._pending_bytes >= self.tuning.send_bytes:
                self._flush(sock)
        self._flush(sock)

    def _produce(self) -> int:
        """Frame one batch (a handed-over one first) into the window and the send queue."""
        sequence = self._next_sequence
        flags = self._data_flags
        #: Under stream, the raw batch the window keeps instead of the payload.
        kept: KeptBatch | None = None
        if self.handover and not self.handover[0].raw:
            old = self.handover.popleft()
            fields: tuple[int, ...] = HEADER.unpack(old.header)
            codec, raw_length, payload_length, crc = fields[1], fields[4], fields[5], fields[6]
            flags |= fields[2] & protocol.FLAG_RAW_FALLBACK
            assert not isinstance(old.payload, FileBatch)  # only kept under stream
            payload = old.payload
            self.counters.resent_batches += 1
        elif self.handover:  # stream: into this connection's context
            kept = self.handover.popleft().payload
            compressed = self._producer.recompress(kept)
            self.counters.compression_seconds += compressed.seconds
            payload, crc = compressed.payload, compressed.crc32
            codec, raw_length, payload_length = compressed.codec, len(kept), len(payload)
            flags |= compressed.flags
            self.counters.resent_batches += 1
        else:
            compressed = self._producer.next()
            self.counters.compression_seconds += compressed.seconds
            payload, crc = compressed.payload, compressed.crc32
            codec = compressed.codec
            flags |= compressed.flags
            raw_length = compressed.raw_length
            payload_length = len(payload)
            kept = compressed.batch
            counters = self.counters
            counters.produced_raw_bytes += raw_length
            counters.produced_payload_bytes += payload_length
            if codec == CodecId.NONE:
                counters.raw_batches += 1
            else:
                counters.compressed_batches += 1
        header = protocol.pack_header(
            FrameType.DATA,
            CodecId(codec),
            sequence=sequence,
            raw_length=raw_length,
            payload_length=payload_length,
            crc32=crc,
            flags=flags,
        )
        self._next_sequence = sequence + 1
        if kept is None:
            self._window.append(Unacked(sequence, header, payload, raw_length))
            self._window_bytes += payload_length
        else:
            # The budget bounds what the window holds: a copied batch counts its raw bytes;
            # a view of a stable source (the synthetic pool) or a file batch's place holds
            # nothing of its own, so it counts the payload it sent, and the window admits
            # as many frames in flight as under `frame` (a raw count would halve them at
            # ratio 2).
            counted = payload_length if isinstance(kept, (memoryview, FileBatch)) else len(kept)
            self._window.append(Unacked(sequence, header, kept, raw_length, True, counted))
            self._window_bytes += counted
        self._queue(header, payload)
        if self._verbose:
            log.info(
                "batch %d to %s: %d -> %d bytes", sequence, self.peer, raw_length, payload_length
            )
        return raw_length

    def _queue(self, header: bytes, payload: bytes | memoryview) -> None:
        self._pending.append(header)
        self._pending.append(payload)
        self._pending_bytes += HEADER_BYTES + len(payload)

    def _flush(self, sock: socket.socket) -> None:
        """Send everything queued, in as few sendmsg calls as the kernel allows."""
        if not self._pending:
            return
        buffers = self._pending
        remaining = self._pending_bytes
        started = time.perf_counter()
        try:
            if isinstance(sock, TlsChannel):  # TLS has no sendmsg: records, one sendall
                sock.send_buffers(buffers)
                self.counters.wire_bytes += remaining
                remaining = 0
            while remaining > 0:
                sent = sock.sendmsg(buffers)
                self.counters.wire_bytes += sent
                remaining -= sent
                if remaining <= 0:
                    break
                buffers = _drop_sent(buffers, sent)
        finally:
            self.counters.network_seconds += time.perf_counter() - started
        if self._window:
            self.progress.outstanding()
        self.acks.sent(self._next_sequence - 1, time.monotonic())
        self._pending = []
        self._pending_bytes = 0

    def _read_acks(self, sock: socket.socket, poller: select.poll, *, wait: bool) -> None:
        tls = sock if isinstance(sock, TlsChannel) else None
        buffered = tls is not None and tls.pending() > 0
        if wait and not buffered:
            started = time.perf_counter()
            ready = poller.poll(_ACK_WAIT_S * 1000)
            waited = time.perf_counter() - started
            self.counters.network_seconds += waited
            self.counters.wait_seconds += waited
            if not ready:
                if self._aborted.is_set():
                    raise StreamStopped
                return
        space = len(self._ack_view) - self._ack_filled
        try:
            if tls is not None:
                # A TLS record is read whole (blocking, under the socket's timeout).
                if not (buffered or wait or poller.poll(0)):
                    return
                count = sock.recv_into(self._ack_view[self._ack_filled :])
            else:
                count = sock.recv_into(self._ack_view[self._ack_filled :], 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        if count == 0:
            raise ConnectionResetError("the receiver closed the connection")
        filled = self._ack_filled + count
        position = 0
        highest = -1
        while filled - position >= HEADER_BYTES:
            header = protocol.parse_header(self._ack_view, position)
            if header.kind != FrameType.ACK:
                raise ProtocolError(f"receiver sent a {header.kind.name} frame")
            highest = max(highest, header.sequence)
            if header.flags & protocol.FLAG_CREDIT and self._credit is not None:
                self._credit = header.raw_length
            position += HEADER_BYTES
        rest = filled - position
        if rest:
            self._ack_buffer[:rest] = self._ack_buffer[position:filled]
        self._ack_filled = rest
        if highest >= self._next_sequence:
            raise ProtocolError(
                f"ACK for sequence {highest}, which was never sent (next is {self._next_sequence})"
            )
        if highest >= 0:
            self._acknowledge(highest)
            # Time only the newest ACK there was (an older one would count its wait).
            more = count >= space or (
                tls is not None and (bool(poller.poll(0)) or tls.pending() > 0)
            )
            if not more:
                self.acks.acked(highest, time.monotonic())

    def _acknowledge(self, sequence: int) -> None:
        window = self._window
        counters = self.counters
        advanced = False
        while window and window[0].sequence <= sequence:
            frame = window.popleft()
            self._window_bytes -= frame.budget_bytes()
            counters.batches += 1
            counters.raw_bytes += frame.raw_length
            advanced = True
        if advanced and self.progress.acknowledged(window_empty=not window):
            log.warning("stream to %s (%d) moves again after a stall", self.peer, self.stream)
            if self._shares is not None and self._slot is not None:
                self._shares.rejoin(self._slot)


def _drop_sent(buffers: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """The unsent tail of a partially sent sendmsg buffer list."""
    for index, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            return [memoryview(buffer)[sent:], *buffers[index + 1 :]]
        sent -= size
    return []
