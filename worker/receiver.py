"""Incoming streams: handshake, recv_into a pooled buffer, verify, decompress, acknowledge.

One thread (`ReceiveLoop`) serves the listener and every incoming connection with a
selector; handshakes (TLS, then the key proof) run on a fixed set of threads started
with the loop and hand the connection over when they succeed.  So a worker spends one
thread on receiving whatever its number of peers, and never starts a thread for a
connection (under a pod's pids limit, that is what kept the accept path alive).

Everything a peer can make the worker hold is bounded: handshakes waiting or running,
per source address and in total, admitted fairly (`admission.py`: the most represented
source is evicted first, known peers have a reserve), each within one deadline from
accept; proven connections, per identity (the stream indices its topology gives it,
a newer connection on an index replacing the older) and in total (from the topology's
in-degree, `SenderPolicy.max_connections`); a frame by the cluster's `batchBytes`
(so one connection's memory and what a frame may decompress to); a partial frame's
silence (`STALL_TIMEOUT_S`), its completion (`partial_deadline_seconds`: a deadline
from its size and a floor rate, whatever trickles in) and a whole connection's silence
(`idle_timeout`); the memory all partial frames hold together (`PartialBudget`).

Receive buffers come from a pool: a connection holds one only while it reads, or
while it waits for the rest of a frame longer than `CARRY_BYTES`; a shorter partial
frame is copied aside.  With many peers the buffers in use stay about one, not one
per connection.

Delivery state (the next expected sequence of each sender stream) outlives a
connection, so when a sender reconnects and replays its window the frames this
worker already verified are recognised and dropped as duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from w5xde.worker import admission, credits, protocol
from w5xde.worker.admission import Admission, KnownPeers, Pending, SenderPolicy, source_of
from w5xde.worker.codec import (
    BatchDecompressor,
    CorruptBatchError,
    StreamDecompressor,
    wire_context,
)
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import ReceiveCounters
from w5xde.worker.handshake import (
    HANDSHAKE_TIMEOUT_S,
    HandshakeTimeoutError,
    Identity,
    server_handshake,
)
from w5xde.worker.protocol import (
    HEADER_BYTES,
    REPLAY_WINDOW_FRAMES,
    FrameLimits,
    FrameType,
    ProtocolError,
)
from w5xde.worker.refusals import RefusalLog
from w5xde.worker.sockets import interrupt, rearm_quickack
from w5xde.worker.tls_channel import TlsChannel

log = logging.getLogger("w5xde.receiver")

_MIN_BUFFER_BYTES = 256 * 1024
#: Receive calls per connection per wake-up, so one busy sender cannot starve the others.
READS_PER_WAKE = 4
#: A partial frame up to this size is copied aside and the buffer returns to the pool;
#: a longer one keeps its buffer until the frame is complete.
CARRY_BYTES = 64 * 1024
#: Free buffers the pool keeps; more are released.
POOL_KEEP = 4
#: Threads that run handshakes, all started with the loop (each blocks on one peer for
#: at most HANDSHAKE_TIMEOUT_S, counted from accept); `admission.RESERVED_THREADS` of
#: them take only known peers.
HANDSHAKE_THREADS = 4
#: How often the addresses of the peers that stream to this worker are looked up again.
RESOLVE_EVERY_S = 30.0
#: A partial frame that gets no byte for this long closes its connection.
STALL_TIMEOUT_S = 10.0
#: A frame must be complete within PARTIAL_FLOOR_S + its size / PARTIAL_FLOOR_RATE of
#: its first byte, however its bytes trickle in (a byte every few seconds resets no
#: clock).  64 KiB/s is far below any stream that moves data: 128 streams sharing a
#: 100 Mbit/s link each get 100 KB/s.
PARTIAL_FLOOR_S = 10.0
PARTIAL_FLOOR_RATE = 64 * 1024
#: Partial frames of all connections together hold at most this much (or one frame
#: of `batchBytes` for each stream the topology sends here, if that is more).
PARTIAL_BUDGET_FLOOR = 64 * 1024 * 1024
#: A connection that sends nothing at all for this long is closed (see `idle_timeout`).
IDLE_TIMEOUT_S = 60.0
#: TLS hands out at most one record (16 KiB) per receive; this many per wake-up.
TLS_READS_PER_WAKE = 64
#: How long the loop sleeps in select() when nothing happens (it is woken for work).
_SELECT_TIMEOUT_S = 1.0


def buffer_bytes(chunk_bytes: int) -> int:
    """The size of a pooled receive buffer: two chunks, at least 256 KiB."""
    return max(2 * chunk_bytes, _MIN_BUFFER_BYTES)


class BufferPool:
    """Receive buffers shared by the connections of one loop (one thread: no lock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.allocated = 0
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        if self._free:
            return self._free.pop()
        self.allocated += 1
        return bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        """Keep a buffer of the pool's size for the next reader; a grown one is dropped."""
        if len(buffer) == self.size and len(self._free) < POOL_KEEP:
            self._free.append(buffer)


def partial_deadline_seconds(frame_bytes: int) -> float:
    """How long a frame of `frame_bytes` (header included) may take from its first byte."""
    return PARTIAL_FLOOR_S + frame_bytes / PARTIAL_FLOOR_RATE


class PartialBudget:
    """Bytes held by the partial frames of one loop's connections (its thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.held: dict[object, int] = {}

    def hold(self, owner: object, count: int) -> None:
        self.total -= self.held.pop(owner, 0)
        if count:
            self.held[owner] = count
            self.total += count

    @property
    def over(self) -> bool:
        return self.total > self.limit


class TakenOverError(ProtocolError):
    """The sender reconnected; its older connection ends quietly."""


@dataclass(slots=True)
class SenderState:
    """Where one sender stream stands; `owner` is the connection allowed to advance it."""

    session: int
    expected: int
    owner: object = None
    first_sequence: int = 0


@dataclass
class IncomingRegistry:
    """Delivery state of every sender stream this worker has heard from."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    senders: dict[tuple[str, int], SenderState] = field(default_factory=dict)
    sockets: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    #: Counters of live connections; a connection that ends is folded into `retired`.
    counters: list[ReceiveCounters] = field(default_factory=list)
    retired: ReceiveCounters = field(default_factory=ReceiveCounters)
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog(log, "incoming connections"))
    #: Sequence gaps by sender name (the `lostBatches` of each incoming link).
    lost_by_sender: dict[str, int] = field(default_factory=dict)

    @property
    def refused_connections(self) -> int:
        """Connections refused: failed handshakes, and those over the caps."""
        return self.refusals.total

    def note_lost(self, sender: str, count: int) -> None:
        with self.lock:
            self.lost_by_sender[sender] = self.lost_by_sender.get(sender, 0) + count

    def claim(self, hello: protocol.Hello, sock: socket.socket, owner: object) -> SenderState:
        """Make this connection the one that delivers for the sender stream; older ones end."""
        key = (hello.sender, hello.stream)
        with self.lock:
            state = self.senders.get(key)
            if state is None or state.session != hello.session:
                state = SenderState(hello.session, hello.resume_from, None, hello.resume_from)
                self.senders[key] = state
            state.owner = owner
            previous = self.sockets.get(key)
            self.sockets[key] = sock
        if previous is not None and previous is not sock:
            interrupt(previous)
        return state

    def release(
        self, hello: protocol.Hello, sock: socket.socket, counters: ReceiveCounters
    ) -> None:
        key = (hello.sender, hello.stream)
        with self.lock:
            if self.sockets.get(key) is sock:
                del self.sockets[key]
            self.counters.remove(counters)
            self.retired.add(counters)

    def total(self) -> ReceiveCounters:
        """Everything received, by live and by ended connections."""
        with self.lock:
            total = self.retired.copy()
            for counters in self.counters:
                total.add(counters)
        return total

    def close_all(self) -> None:
        with self.lock:
            sockets = list(self.sockets.values())
        for sock in sockets:
            interrupt(sock)

    @property
    def connected(self) -> int:
        return len(self.sockets)


class IncomingConnection:
    """One accepted connection: handshake (blocking), then non-blocking reads on readiness.

    `ReceiveLoop` drives many of these from one thread; `serve()` drives one alone (the
    fuzz tests use it), through the very same `on_ready`.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        config: WorkerConfig,
        identity: Identity,
        registry: IncomingRegistry,
        pool: BufferPool | None = None,
        decompressor: BatchDecompressor | None = None,
        deadline: float | None = None,
        budget: PartialBudget | None = None,
    ) -> None:
        self.sock = sock
        self._budget = budget
        #: When the partial frame held now must be complete (None: none held).
        self.partial_deadline: float | None = None
        self.partial_since = 0.0
        self._partial_token = -1
        self._partial_bytes = 0
        #: The handshake must be done by then (counted from accept, not from its turn).
        self.deadline = deadline if deadline is not None else time.monotonic() + HANDSHAKE_TIMEOUT_S
        self.last_progress = time.monotonic()
        self._limits = FrameLimits(config.workload.batch_bytes)
        self._config = config
        self._identity = identity
        self._registry = registry
        self.counters = ReceiveCounters()
        self._pool = (
            pool if pool is not None else BufferPool(buffer_bytes(config.network.chunk_bytes))
        )
        self._decompressor: BatchDecompressor | StreamDecompressor = (
            decompressor if decompressor is not None else BatchDecompressor()
        )
        self._verbose = logging.getLogger("w5xde").isEnabledFor(logging.INFO)
        self._hello: protocol.Hello | None = None
        self._state: SenderState | None = None
        #: A long partial frame keeps its buffer (filled up to `_end`) between wake-ups.
        self._buffer: bytearray | None = None
        self._end = 0
        #: A short partial frame waits here instead, and the buffer goes back to the pool.
        self._carry = b""
        self._ack_out = b""
        self._ack_next = -1
        #: The credit granted in each ACK once the sender asks for it (balance: capacity).
        self._credit = -1
        self.events = selectors.EVENT_READ
        self.closed = False
        self.adopted = False
        self.adopted_at = 0.0
        self._tls = False
        #: `context: stream`: duplicates are decoded too (the history needs them).
        self._stream_context = False

    @property
    def sender(self) -> str:
        return self._hello.sender if self._hello is not None else _peer_name(self.sock)

    # --- handshake (blocking, on a handshake thread) -----------------------------------

    def handshake(self) -> bool:
        """Check the peer's certificate, introduction and key; on failure the socket closes."""
        try:
            accepted = server_handshake(
                self.sock,
                self._identity,
                deadline=self.deadline,
                context=wire_context(self._config.compression),
            )
        except (OSError, ProtocolError) as error:
            timeout = isinstance(error, HandshakeTimeoutError)
            reason = "handshake timeout" if timeout else "handshake failed"
            self._registry.refusals.refused(reason, f"from {_peer_name(self.sock)}: {error}")
            self.sock.close()
            self.closed = True
            return False
        self.sock = accepted.sock
        self._tls = isinstance(self.sock, TlsChannel)
        hello = accepted.hello
        if hello.context == protocol.Context.STREAM:
            # This connection's own decoder: its frames refer back to each other.
            self._decompressor = StreamDecompressor(verify_crc=not self._tls)
            self._stream_context = True
        self._hello = hello
        return True

    @property
    def hello(self) -> protocol.Hello | None:
        return self._hello

    def adopt(self) -> None:
        """Become the connection that delivers for its sender stream (after the caps)."""
        hello = self._hello
        assert hello is not None
        with self._registry.lock:
            self._registry.counters.append(self.counters)
        if isinstance(self.sock, TlsChannel):
            self.sock.counters = self.counters
        self._state = self._registry.claim(hello, self.sock, self)
        self.last_progress = time.monotonic()
        self.adopted = True
        self.adopted_at = self.last_progress

    def refuse(self, reason: str, detail: str) -> None:
        """Close a proven connection the caps do not admit (counted, never adopted)."""
        self._registry.refusals.refused(reason, f"{self.sender}: {detail}")
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.sock.close()

    def serve(self) -> None:
        """Handshake, then receive until the connection ends, in the calling thread."""
        if not self.handshake():
            return
        self.adopt()
        self.sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, self.events)
            while True:
                ready = selector.select()
                if not all(self.on_ready(mask) for _, mask in ready):
                    break
                selector.modify(self.sock, self.events)
            selector.unregister(self.sock)
        self.finish()

    # --- on readiness (the loop thread) ------------------------------------------------

    def on_ready(self, mask: int) -> bool:
        """Read and/or send what the socket allows; False when the connection is over."""
        try:
            if mask & selectors.EVENT_READ and not self._read():
                self._flush_ack()
                return False
            self._flush_ack()
        except TakenOverError as error:
            log.warning("closing stream from %s: %s", self.sender, error)
            return False
        except ProtocolError as error:
            self.counters.protocol_errors += 1
            log.error("closing stream from %s: protocol error: %s", self.sender, error)
            return False
        except CorruptBatchError as error:
            log.error("closing stream from %s: corrupt batch: %s", self.sender, error)
            return False
        except ssl.SSLError as error:  # a record that fails its MAC: tampered on the way
            self.counters.protocol_errors += 1
            log.error("closing stream from %s: TLS error: %s", self.sender, error.reason or error)
            return False
        except OSError as error:
            log.warning("stream from %s ended: %s", self.sender, error)
            return False
        self.events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.wants_write else 0)
        return True

    def finish(self) -> None:
        """Fold the counters into the registry, return the buffer, close the socket."""
        if self.closed:
            return
        self.closed = True
        if self._buffer is not None:
            self._pool.give(self._buffer)
            self._buffer = None
        self._carry = b""
        if self._budget is not None:
            self._budget.hold(self, 0)
        if self._hello is not None and self.adopted:
            self._registry.release(self._hello, self.sock, self.counters)
        self.sock.close()

    @property
    def wants_write(self) -> bool:
        """An ACK waits, or the ciphertext of one that TLS encrypted but the kernel did
        not take yet (without EVENT_WRITE for it, that tail waited for the next ACK,
        which the sender, waiting for this one, never made come)."""
        sock = self.sock
        tls_tail = isinstance(sock, TlsChannel) and sock.unsent > 0
        return bool(self._ack_out) or self._ack_next >= 0 or tls_tail

    @property
    def holds_partial_frame(self) -> bool:
        return self._buffer is not None or bool(self._carry)

    @property
    def readable_now(self) -> bool:
        """TLS bytes already decrypted and buffered, which select() cannot see."""
        sock = self.sock
        return isinstance(sock, TlsChannel) and not self.closed and sock.pending() > 0

    def _read(self) -> bool:
        """Up to READS_PER_WAKE receives; False at the end of the stream or a CLOSE frame."""
        chunk = self._config.network.chunk_bytes
        quickack = self._config.network.tcp_quick_ack
        sock = self.sock
        counters = self.counters
        perf = time.perf_counter
        buffer = self._buffer
        if buffer is None:
            buffer = self._pool.take()
            end = len(self._carry)
            if end:
                buffer[:end] = self._carry
                self._carry = b""
        else:
            end = self._end
            self._buffer = None
        start = 0
        view = memoryview(buffer)
        limit = self._limits.max_payload + HEADER_BYTES + chunk
        tls = self._tls
        open_ = True
        try:
            for _ in range(TLS_READS_PER_WAKE if tls else READS_PER_WAKE):
                if len(buffer) - end < chunk:
                    if start:
                        size = end - start
                        buffer[:size] = buffer[start:end]
                        start, end = 0, size
                    if len(buffer) - end < chunk:
                        # Only a frame bigger than the buffer gets here; the buffer grows with
                        # the bytes that actually arrived, never ahead of them on a header's word.
                        grown = bytearray(min(max(2 * len(buffer), end + chunk), limit))
                        grown[:end] = view[:end]
                        view.release()
                        self._pool.give(buffer)
                        buffer, view = grown, memoryview(grown)
                began = perf()
                try:
                    count = sock.recv_into(view[end : end + chunk])
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                finally:
                    counters.network_seconds += perf() - began
                if count == 0:
                    open_ = False
                    break
                self.last_progress = time.monotonic()
                if quickack:
                    rearm_quickack(sock)
                end += count
                start, closing = self._parse(view, start, end)
                if closing:
                    open_ = False
                    break
                if count < chunk and not tls:
                    break  # the socket is most likely drained: back to select()
        finally:
            view.release()
            self._keep(buffer, start, end)
            self._note_partial()
        return open_

    def _keep(self, buffer: bytearray, start: int, end: int) -> None:
        """Put a partial frame aside and give the buffer back, or hold it for a long frame."""
        leftover = end - start
        if leftover > CARRY_BYTES:
            if start:
                buffer[:leftover] = buffer[start:end]
            self._buffer, self._end = buffer, leftover
            return
        if leftover:
            self._carry = bytes(buffer[start:end])
        self._pool.give(buffer)

    def _note_partial(self) -> None:
        """Account the partial frame held now: its memory in the budget, its deadline."""
        held = len(self._buffer) if self._buffer is not None else len(self._carry)
        if self._budget is not None:
            self._budget.hold(self, held)
        if not held:
            self.partial_deadline = None
            return
        counters = self.counters
        token = counters.batches + counters.duplicate_batches
        if self.partial_deadline is None or token != self._partial_token:
            # A frame completed since: what is held is the start of a new one.
            self._partial_token = token
            self.partial_since = time.monotonic()
            self._partial_bytes = 0
        if not self._partial_bytes:
            data = self._buffer if self._buffer is not None else self._carry
            length = self._end if self._buffer is not None else len(self._carry)
            if length >= HEADER_BYTES:
                with contextlib.suppress(ProtocolError, ValueError):
                    header = protocol.parse_header(data, 0)
                    self._partial_bytes = HEADER_BYTES + header.payload_length
        size = self._partial_bytes or HEADER_BYTES
        self.partial_deadline = self.partial_since + partial_deadline_seconds(size)

    def _parse(self, view: memoryview, start: int, end: int) -> tuple[int, bool]:
        """Verify and account every whole frame in view[start:end]; (new start, CLOSE seen)."""
        state = self._state
        assert state is not None
        counters = self.counters
        parse_header = protocol.parse_header
        delivered = False
        closing = False
        limits = self._limits
        while end - start >= HEADER_BYTES:
            header = parse_header(view, start)
            limits.check(header)
            frame_end = start + HEADER_BYTES + header.payload_length
            if frame_end > end:
                break
            if header.kind == FrameType.DATA:
                if state.owner is not self:
                    raise TakenOverError("a newer connection took over this sender stream")
                sequence = header.sequence
                if sequence < state.expected:
                    counters.duplicate_batches += 1
                    if self._stream_context:  # decoded, never counted: the context needs it
                        self._verify(header, view[start + HEADER_BYTES : frame_end])
                else:
                    if sequence - state.expected > REPLAY_WINDOW_FRAMES:
                        raise ProtocolError(
                            f"sequence {sequence} is beyond the replay window "
                            f"({REPLAY_WINDOW_FRAMES} frames past {state.expected})"
                        )
                    if sequence > state.expected:
                        counters.lost_batches += sequence - state.expected
                        self._registry.note_lost(self.sender, sequence - state.expected)
                    self._verify(header, view[start + HEADER_BYTES : frame_end])
                    state.expected = sequence + 1
                    if header.flags & protocol.FLAG_WANTS_CREDIT and self._credit < 0:
                        self._credit = self._grant()
                    counters.batches += 1
                    counters.raw_bytes += header.raw_length
                    counters.wire_bytes += frame_end - start
                    if self._verbose:
                        log.info(
                            "batch %d from %s verified: %d bytes",
                            sequence,
                            self.sender,
                            header.raw_length,
                        )
                delivered = True
            elif header.kind == FrameType.CLOSE:
                closing = True
            else:
                raise ProtocolError(f"unexpected {header.kind.name} frame from a sender")
            start = frame_end
        if delivered and state.expected > 0:
            self._ack_next = state.expected - 1
        return start, closing

    def _verify(self, header: protocol.FrameHeader, payload: memoryview) -> None:
        """Decompress and check one payload, timed; a corrupt one is counted and raised."""
        counters = self.counters
        began = time.perf_counter()
        try:
            self._decompressor.decompress(header.codec, payload, header.raw_length, header.crc32)
        except CorruptBatchError:
            counters.corrupt_batches += 1
            raise
        finally:
            counters.compression_seconds += time.perf_counter() - began

    def _grant(self) -> int:
        network = self._config.network
        limit = network.fixed_buffer_bytes or protocol.MAX_RAW_BYTES
        return credits.credit_window(self._config.workload.batch_bytes, max(limit, 1))

    def _flush_ack(self) -> None:
        """Send the newest ACK; what the socket does not take waits for EVENT_WRITE."""
        perf = time.perf_counter
        sock = self.sock
        if isinstance(sock, TlsChannel) and sock.unsent and not sock.flush_unsent():
            return
        while True:
            if not self._ack_out:
                if self._ack_next < 0:
                    return
                self._ack_out = protocol.ack_frame(self._ack_next, self._credit)
                self._ack_next = -1
            began = perf()
            try:
                sent = self.sock.send(self._ack_out)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            finally:
                self.counters.network_seconds += perf() - began
            self._ack_out = self._ack_out[sent:]


class ReceiveLoop:
    """One thread: accepts on the listener and serves every incoming connection.

    Time spent waiting in select() while connections are open is counted as network
    time, as the blocking receives of a thread per connection were.
    """

    def __init__(
        self,
        listener: socket.socket,
        *,
        config: WorkerConfig,
        identity: Identity,
        registry: IncomingRegistry,
        workers: int | None = None,
    ) -> None:
        self._listener = listener
        self._config = config
        self._identity = identity
        self._registry = registry
        self.pool = BufferPool(buffer_bytes(config.network.chunk_bytes))
        self._decompressor = BatchDecompressor()
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._handshaken: deque[tuple[IncomingConnection, str]] = deque()
        #: Guards the hand-over of proven connections against the loop's end.
        self._handoff = threading.Lock()
        self._handoff_closed = False
        self.admission = Admission()
        self.policy = SenderPolicy(config, workers or len(config.peer_list()))
        self.budget = PartialBudget(self._budget_limit())
        self.known = KnownPeers()
        self._handshake_threads = [
            threading.Thread(
                target=self._handshake_worker,
                args=(n < admission.RESERVED_THREADS,),
                name=f"handshake-{n}",
                daemon=True,
            )
            for n in range(HANDSHAKE_THREADS)
        ]
        self._resolver = threading.Thread(target=self._resolve_loop, name="resolve", daemon=True)
        self._connections: set[IncomingConnection] = set()
        self._stopping = threading.Event()
        self._resolve_now = threading.Event()
        self.counters = ReceiveCounters()
        self.idle_timeout = idle_timeout(config)
        with registry.lock:
            registry.counters.append(self.counters)
        self._thread = threading.Thread(target=self._run, name="receive", daemon=True)
        self.known.configure(self.policy.expected_hosts())

    def start(self) -> None:
        """Start every thread the accept path will ever need (a failure here fails start)."""
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_in, selectors.EVENT_READ, "wake")
        for thread in self._handshake_threads:
            thread.start()
        self._resolver.start()
        self._thread.start()

    def resize(self, workers: int) -> None:
        """The cluster's size changed: the caps and the known peers follow."""
        self.policy.resize(workers)
        self.budget.limit = self._budget_limit()
        self._resolve_now.set()

    def _budget_limit(self) -> int:
        frame = FrameLimits(self._config.workload.batch_bytes).max_payload + HEADER_BYTES
        return max(PARTIAL_BUDGET_FLOOR, self.policy.expected_streams() * frame)

    @property
    def alive(self) -> bool:
        """The loop and every handshake thread still run (else nothing new is accepted)."""
        return self._thread.is_alive() and all(t.is_alive() for t in self._handshake_threads)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; returns once the thread ended."""
        self._stopping.set()
        self._resolve_now.set()
        self._wake()
        self._thread.join(timeout)
        for waiting in self.admission.close():
            _connection(waiting).sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _resolve_loop(self) -> None:
        """Look up the hosts of the peers that stream here (DNS names in a pod)."""
        while not self._stopping.is_set():
            self._resolve_now.wait(RESOLVE_EVERY_S)
            self._resolve_now.clear()
            if self._stopping.is_set():
                return
            try:
                self.known.configure(self.policy.expected_hosts(), resolve=True)
            except Exception:  # never let a lookup bug end the thread (logged)
                log.exception("looking up the peers' addresses failed")

    def _run(self) -> None:
        selector = self._selector
        perf = time.perf_counter
        next_sweep = time.monotonic() + _SELECT_TIMEOUT_S
        buffered: list[IncomingConnection] = []
        self._resolve_now.set()
        try:
            while not self._stopping.is_set():
                began = perf()
                ready = selector.select(0 if buffered else _SELECT_TIMEOUT_S)
                if self._connections:
                    self.counters.network_seconds += perf() - began
                served: set[IncomingConnection] = set()
                for key, mask in ready:
                    data = key.data
                    if data == "listener":
                        self._accept()
                    elif data == "wake":
                        self._drain_wake()
                    elif isinstance(data, Pending):
                        # Bytes arrived: now it is worth a handshake thread.
                        with contextlib.suppress(KeyError, ValueError):
                            selector.unregister(key.fileobj)
                        self.admission.ready(data)
                    else:
                        served.add(data)
                        self._serve(data, mask)
                for connection in buffered:
                    if connection not in served and not connection.closed:
                        served.add(connection)
                        self._serve(connection, selectors.EVENT_READ)
                # Only a connection just read from can have bytes select() cannot see.
                buffered = [c for c in served if c.readable_now]
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SELECT_TIMEOUT_S
        finally:
            for connection in list(self._connections):
                self._close(connection)
            for waiting in self.admission.close():
                self._drop_pending(waiting)
            with self._handoff:  # proven after the loop's last look
                self._handoff_closed = True
                while self._handshaken:
                    self._handshaken.popleft()[0].finish()
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self._listener)
            self._listener.close()
            selector.close()
            self._wake_in.close()
            self._wake_out.close()

    def _serve(self, connection: IncomingConnection, mask: int) -> None:
        try:
            going_on = connection.on_ready(mask)
        except Exception:  # one connection's bug must not end every stream (logged)
            log.exception("closing stream from %s after an unexpected error", connection.sender)
            going_on = False
        if not going_on:
            self._close(connection)
            return
        if connection.events != self._selector.get_key(connection.sock).events:
            self._selector.modify(connection.sock, connection.events, connection)
        if self.budget.over:
            self._trim_partial_frames()

    def _trim_partial_frames(self) -> None:
        """Over the budget: close connections holding partial frames, those of senders
        the topology does not expect first, then the oldest frames, until under it."""
        holders = [c for c in self.budget.held if isinstance(c, IncomingConnection)]
        expected = {
            c: c.hello is not None and self.policy.multiplicity(c.hello.sender) > 0 for c in holders
        }
        for connection in sorted(holders, key=lambda c: (expected[c], c.partial_since)):
            if not self.budget.over:
                return
            connection.counters.protocol_errors += 1
            self._registry.refusals.refused(
                "partial frames over the memory budget",
                f"{connection.sender}: {self.budget.total} bytes held, {self.budget.limit} allowed",
            )
            log.error(
                "closing stream from %s: partial frames over the memory budget (%d bytes)",
                connection.sender,
                self.budget.limit,
            )
            self._close(connection)

    def _close(self, connection: IncomingConnection) -> None:
        self._connections.discard(connection)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        connection.finish()

    def _sweep(self, now: float) -> None:
        """Close connections that hold a partial frame without progress, or say nothing,
        and pending ones past their handshake deadline that no thread has taken."""
        for waiting in self.admission.expired(now):
            self._registry.refusals.refused(
                "handshake timeout", f"{waiting.source}: not done within {HANDSHAKE_TIMEOUT_S:g} s"
            )
            self._drop_pending(waiting)
        for connection in list(self._connections):
            silent = now - connection.last_progress
            deadline = connection.partial_deadline
            if connection.holds_partial_frame and silent > STALL_TIMEOUT_S:
                why = f"a partial frame got no byte for {STALL_TIMEOUT_S:g} s"
            elif deadline is not None and now > deadline:
                why = (
                    f"a partial frame not complete {now - connection.partial_since:.1f} s "
                    f"after its first byte (a floor of {PARTIAL_FLOOR_RATE // 1024} KiB/s)"
                )
            elif silent > self.idle_timeout:
                why = f"nothing received for {self.idle_timeout:g} s"
            else:
                continue
            connection.counters.protocol_errors += 1
            log.error("closing stream from %s: %s", connection.sender, why)
            self._close(connection)

    def _drop_pending(self, waiting: Pending) -> None:
        """Close a connection that never reached a handshake thread (loop thread only)."""
        sock = _connection(waiting).sock
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()

    def _accept(self) -> None:
        admission_ = self.admission
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:  # EMFILE and the like: refuse, keep accepting later
                self._registry.refusals.refused("accept failed", str(error))
                return
            now = time.monotonic()
            source = source_of(address)
            connection = IncomingConnection(
                sock,
                config=self._config,
                identity=self._identity,
                registry=self._registry,
                pool=self.pool,
                decompressor=self._decompressor,
                deadline=now + HANDSHAKE_TIMEOUT_S,
                budget=self.budget,
            )
            entry = Pending(source, source in self.known, now, connection.deadline, connection)
            evicted = admission_.admit(entry)
            if all(victim is not entry for victim, _ in evicted):
                self._selector.register(sock, selectors.EVENT_READ, entry)
            for victim, cap in evicted:
                self._registry.refusals.refused(f"evicted: {cap}", victim.source)
                self._drop_pending(victim)

    def _handshake_worker(self, reserved: bool) -> None:
        """One handshake thread: the loop takes each connection over once it is proven."""
        while True:
            waiting = self.admission.take(reserved=reserved)
            if waiting is None or self._stopping.is_set():
                if waiting is not None:
                    self.admission.done(waiting)
                    _connection(waiting).sock.close()
                return
            connection = _connection(waiting)
            try:
                proven = connection.handshake()
                if proven:
                    self._check_stream(connection, waiting.source)
            except Exception:  # a bug must not silently end this thread (logged, refused)
                log.exception("handshake from %s failed unexpectedly", connection.sender)
                connection.sock.close()
                proven = False
            finally:
                self.admission.done(waiting)
            if proven and not connection.closed:
                self.known.prove(waiting.source)
                with self._handoff:
                    if self._handoff_closed:
                        connection.finish()
                        continue
                    self._handshaken.append((connection, waiting.source))
                self._wake()

    def _check_stream(self, connection: IncomingConnection, source: str) -> None:
        """Refuse a stream index the sender's topology does not give it (counted)."""
        hello = connection.hello
        assert hello is not None
        allowed = self.policy.streams_allowed(hello.sender)
        if not 0 <= hello.stream < allowed:
            connection.refuse(
                "stream index out of range",
                f"stream {hello.stream}, allowed 0..{allowed - 1} (streamsPerPeer)",
            )

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_in.recv(4096):
                pass
        while self._handshaken:
            connection, _source = self._handshaken.popleft()
            if self._stopping.is_set():
                connection.finish()
                continue
            if not self._make_room(connection):
                continue
            connection.adopt()
            connection.sock.setblocking(False)
            self._connections.add(connection)
            self._selector.register(connection.sock, connection.events, connection)

    def _make_room(self, connection: IncomingConnection) -> bool:
        """Under the cap, or room made by closing a connection of a sender the topology
        does not expect (the oldest), when this one's is expected; else refused."""
        cap = self.policy.max_connections()
        hello = connection.hello
        assert hello is not None
        replacing = self._registry.sockets.get((hello.sender, hello.stream)) is not None
        if len(self._connections) < cap or replacing:
            return True
        if self.policy.multiplicity(hello.sender) > 0:
            strangers = [
                c
                for c in self._connections
                if c.hello is not None and self.policy.multiplicity(c.hello.sender) == 0
            ]
            if strangers:
                oldest = min(strangers, key=lambda c: c.adopted_at)
                self._registry.refusals.refused(
                    "over the connection cap", f"{oldest.sender}: made room for {hello.sender}"
                )
                self._close(oldest)
                return True
        connection.refuse("over the connection cap", f"{cap} streams")
        return False


#: Connections accepted per wake-up, so a flood of connects cannot starve the streams.
ACCEPTS_PER_WAKE = 64


def _connection(waiting: Pending) -> IncomingConnection:
    connection = waiting.connection
    assert isinstance(connection, IncomingConnection)
    return connection


def idle_timeout(config: WorkerConfig) -> float:
    """How long a proven connection may say nothing: IDLE_TIMEOUT_S, unless the cluster's
    rate limit spaces batches further apart (a stream may carry 1/128 of the rate)."""
    rate = config.workload.rate_limit_bytes_per_second
    if rate <= 0:
        return IDLE_TIMEOUT_S
    return max(IDLE_TIMEOUT_S, 4 * config.workload.batch_bytes * 128 / rate)


def _peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
