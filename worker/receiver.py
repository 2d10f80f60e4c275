"""Incoming streams: handshake, recv_into a pooled buffer, verify, decompress, acknowledge.

One thread (`ReceiveLoop`) serves the listener and every incoming connection with a
selector; handshakes (TLS, then the key proof) run on a fixed set of threads started
with the loop and hand the connection over when they succeed.  So a worker spends one
thread on receiving whatever its number of peers, and never starts a thread for a
connection (under a pod's pids limit, that is what kept the accept path alive).

Everything a peer can make the worker hold is bounded: handshakes waiting or running
(`MAX_PENDING_HANDSHAKES`, refused at once beyond it), each within one deadline from
accept; proven connections (`MAX_CONNECTIONS`); a frame by the cluster's `batchBytes`
(so one connection's memory and what a frame may decompress to); a partial frame's
silence (`STALL_TIMEOUT_S`) and a whole connection's (`idle_timeout`).

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
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from w5xde.worker import credits, protocol
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
#: at most HANDSHAKE_TIMEOUT_S, counted from accept).
HANDSHAKE_THREADS = 4
#: Accepted connections waiting for or in a handshake; beyond this, closed at once.
MAX_PENDING_HANDSHAKES = 32
#: Proven incoming connections (a worker has at most 128 outgoing streams, and so about
#: as many incoming ones; twice that leaves room for reconnects that overlap).
MAX_CONNECTIONS = 256
#: A partial frame that gets no byte for this long closes its connection.
STALL_TIMEOUT_S = 10.0
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
    ) -> None:
        self.sock = sock
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
        with self._registry.lock:
            self._registry.counters.append(self.counters)
        self._state = self._registry.claim(hello, self.sock, self)
        self._hello = hello
        self.last_progress = time.monotonic()
        return True

    def serve(self) -> None:
        """Handshake, then receive until the connection ends, in the calling thread."""
        if not self.handshake():
            return
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
        if self._hello is not None:
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

    def _parse(self, view: memoryview, start: int, end: int) -> tuple[int, bool]:
        """Verify and account every whole frame in view[start:end]; (new start, CLOSE seen)."""
        state = self._state
        assert state is not None
        counters = self.counters
        decompress = self._decompressor.decompress
        parse_header = protocol.parse_header
        perf = time.perf_counter
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
                        began = perf()
                        try:
                            decompress(
                                header.codec,
                                view[start + HEADER_BYTES : frame_end],
                                header.raw_length,
                                header.crc32,
                            )
                        except CorruptBatchError:
                            counters.corrupt_batches += 1
                            raise
                        finally:
                            counters.compression_seconds += perf() - began
                else:
                    if sequence - state.expected > REPLAY_WINDOW_FRAMES:
                        raise ProtocolError(
                            f"sequence {sequence} is beyond the replay window "
                            f"({REPLAY_WINDOW_FRAMES} frames past {state.expected})"
                        )
                    if sequence > state.expected:
                        counters.lost_batches += sequence - state.expected
                        self._registry.note_lost(self.sender, sequence - state.expected)
                    began = perf()
                    try:
                        decompress(
                            header.codec,
                            view[start + HEADER_BYTES : frame_end],
                            header.raw_length,
                            header.crc32,
                        )
                    except CorruptBatchError:
                        counters.corrupt_batches += 1
                        raise
                    finally:
                        counters.compression_seconds += perf() - began
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
        self._handshaken: deque[IncomingConnection] = deque()
        self._pending: queue.Queue[IncomingConnection | None] = queue.Queue(MAX_PENDING_HANDSHAKES)
        self._handshake_threads = [
            threading.Thread(target=self._handshake_worker, name=f"handshake-{n}", daemon=True)
            for n in range(HANDSHAKE_THREADS)
        ]
        self._connections: set[IncomingConnection] = set()
        self._stopping = threading.Event()
        self.counters = ReceiveCounters()
        self.idle_timeout = idle_timeout(config)
        with registry.lock:
            registry.counters.append(self.counters)
        self._thread = threading.Thread(target=self._run, name="receive", daemon=True)

    def start(self) -> None:
        """Start every thread the accept path will ever need (a failure here fails start)."""
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_in, selectors.EVENT_READ, "wake")
        for thread in self._handshake_threads:
            thread.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The loop and every handshake thread still run (else nothing new is accepted)."""
        return self._thread.is_alive() and all(t.is_alive() for t in self._handshake_threads)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; returns once the thread ended."""
        self._stopping.set()
        self._wake()
        self._thread.join(timeout)
        while True:
            try:
                waiting = self._pending.get_nowait()
            except queue.Empty:
                break
            if waiting is not None:
                waiting.sock.close()
        for _ in self._handshake_threads:
            with contextlib.suppress(queue.Full):
                self._pending.put_nowait(None)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _run(self) -> None:
        selector = self._selector
        perf = time.perf_counter
        next_sweep = time.monotonic() + _SELECT_TIMEOUT_S
        buffered: list[IncomingConnection] = []
        try:
            while not self._stopping.is_set():
                began = perf()
                ready = selector.select(0 if buffered else _SELECT_TIMEOUT_S)
                if self._connections:
                    self.counters.network_seconds += perf() - began
                served: set[IncomingConnection] = set()
                for key, mask in ready:
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        served.add(key.data)
                        self._serve(key.data, mask)
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
            while self._handshaken:  # proven after the loop's last look
                self._handshaken.popleft().finish()
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

    def _close(self, connection: IncomingConnection) -> None:
        self._connections.discard(connection)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        connection.finish()

    def _sweep(self, now: float) -> None:
        """Close connections that hold a partial frame without progress, or say nothing."""
        for connection in list(self._connections):
            silent = now - connection.last_progress
            if connection.holds_partial_frame and silent > STALL_TIMEOUT_S:
                why = f"a partial frame got no byte for {STALL_TIMEOUT_S:g} s"
            elif silent > self.idle_timeout:
                why = f"nothing received for {self.idle_timeout:g} s"
            else:
                continue
            connection.counters.protocol_errors += 1
            log.error("closing stream from %s: %s", connection.sender, why)
            self._close(connection)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:  # EMFILE and the like: refuse, keep accepting later
                self._registry.refusals.refused("accept failed", str(error))
                return
            if len(self._connections) + len(self._handshaken) >= MAX_CONNECTIONS:
                self._refuse(sock, "over the connection cap", f"{MAX_CONNECTIONS} streams")
                continue
            connection = IncomingConnection(
                sock,
                config=self._config,
                identity=self._identity,
                registry=self._registry,
                pool=self.pool,
                decompressor=self._decompressor,
                deadline=time.monotonic() + HANDSHAKE_TIMEOUT_S,
            )
            try:
                self._pending.put_nowait(connection)
            except queue.Full:
                self._refuse(
                    sock, "too many pending handshakes", f"{MAX_PENDING_HANDSHAKES} pending"
                )

    def _refuse(self, sock: socket.socket, reason: str, detail: str) -> None:
        self._registry.refusals.refused(reason, f"{_peer_name(sock)}: {detail}")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()

    def _handshake_worker(self) -> None:
        """One handshake thread: the loop takes each connection over once it is proven."""
        while True:
            connection = self._pending.get()
            if connection is None or self._stopping.is_set():
                if connection is not None:
                    connection.sock.close()
                return
            try:
                proven = connection.handshake()
            except Exception:  # a bug must not silently end this thread (logged, refused)
                log.exception("handshake from %s failed unexpectedly", connection.sender)
                connection.sock.close()
                continue
            if proven:
                self._handshaken.append(connection)
                self._wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_in.recv(4096):
                pass
        while self._handshaken:
            connection = self._handshaken.popleft()
            if self._stopping.is_set():
                connection.finish()
                continue
            connection.sock.setblocking(False)
            self._connections.add(connection)
            self._selector.register(connection.sock, connection.events, connection)


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
