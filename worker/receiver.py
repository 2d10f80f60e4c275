"""Incoming streams: handshake, recv_into a pooled buffer, verify, decompress, acknowledge.

One thread (`ReceiveLoop`) serves the listener and every incoming connection with a
selector; handshakes, which block on the peer for up to 5 s a step, run on a small
pool of threads and hand the connection to the loop when they succeed.  So a worker
spends one thread on receiving whatever its number of peers, not one per connection.

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
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from w5xde.worker import credits, protocol
from w5xde.worker.codec import BatchDecompressor, CorruptBatchError
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import Counters
from w5xde.worker.handshake import Identity, server_handshake
from w5xde.worker.protocol import HEADER_BYTES, MAX_PAYLOAD_BYTES, FrameType, ProtocolError
from w5xde.worker.sockets import rearm_quickack

log = logging.getLogger("w5xde.receiver")

_MIN_BUFFER_BYTES = 256 * 1024
#: Receive calls per connection per wake-up, so one busy sender cannot starve the others.
READS_PER_WAKE = 4
#: A partial frame up to this size is copied aside and the buffer returns to the pool;
#: a longer one keeps its buffer until the frame is complete.
CARRY_BYTES = 64 * 1024
#: Free buffers the pool keeps; more are released.
POOL_KEEP = 4
#: Threads that run handshakes (each blocks on one peer for at most 3 x 5 s).
HANDSHAKE_THREADS = 2
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
    counters: list[Counters] = field(default_factory=list)
    retired: Counters = field(default_factory=Counters)
    rejected_connections: int = 0

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
            with contextlib.suppress(OSError):
                previous.shutdown(socket.SHUT_RDWR)
        return state

    def release(self, hello: protocol.Hello, sock: socket.socket, counters: Counters) -> None:
        key = (hello.sender, hello.stream)
        with self.lock:
            if self.sockets.get(key) is sock:
                del self.sockets[key]
            self.counters.remove(counters)
            self.retired.add(counters)

    def total(self) -> Counters:
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
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

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
    ) -> None:
        self.sock = sock
        self._config = config
        self._identity = identity
        self._registry = registry
        self.counters = Counters()
        self._pool = (
            pool if pool is not None else BufferPool(buffer_bytes(config.network.chunk_bytes))
        )
        self._decompressor = decompressor if decompressor is not None else BatchDecompressor()
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

    @property
    def sender(self) -> str:
        return self._hello.sender if self._hello is not None else _peer_name(self.sock)

    # --- handshake (blocking, on a handshake thread) -----------------------------------

    def handshake(self) -> bool:
        """Check the peer's introduction and key; on failure the socket is closed."""
        try:
            hello = server_handshake(self.sock, self._identity)
        except (OSError, ProtocolError) as error:
            with self._registry.lock:
                self._registry.rejected_connections += 1
            log.error("handshake from %s refused: %s", _peer_name(self.sock), error)
            self.sock.close()
            self.closed = True
            return False
        with self._registry.lock:
            self._registry.counters.append(self.counters)
        self._state = self._registry.claim(hello, self.sock, self)
        self._hello = hello
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
            log.error("closing stream from %s: %s", self.sender, error)
            return False
        except CorruptBatchError as error:
            log.error("closing stream from %s: corrupt batch: %s", self.sender, error)
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
        return bool(self._ack_out) or self._ack_next >= 0

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
        limit = MAX_PAYLOAD_BYTES + HEADER_BYTES + chunk
        open_ = True
        try:
            for _ in range(READS_PER_WAKE):
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
                except BlockingIOError:
                    break
                finally:
                    counters.network_seconds += perf() - began
                if count == 0:
                    open_ = False
                    break
                if quickack:
                    rearm_quickack(sock)
                end += count
                start, closing = self._parse(view, start, end)
                if closing:
                    open_ = False
                    break
                if count < chunk:
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
        while end - start >= HEADER_BYTES:
            header = parse_header(view, start)
            frame_end = start + HEADER_BYTES + header.payload_length
            if frame_end > end:
                break
            if header.kind == FrameType.DATA:
                if state.owner is not self:
                    raise TakenOverError("a newer connection took over this sender stream")
                sequence = header.sequence
                if sequence < state.expected:
                    counters.duplicate_batches += 1
                else:
                    if sequence > state.expected:
                        counters.lost_batches += sequence - state.expected
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
        while True:
            if not self._ack_out:
                if self._ack_next < 0:
                    return
                self._ack_out = protocol.ack_frame(self._ack_next, self._credit)
                self._ack_next = -1
            began = perf()
            try:
                sent = self.sock.send(self._ack_out)
            except BlockingIOError:
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
        self._handshakes = ThreadPoolExecutor(HANDSHAKE_THREADS, thread_name_prefix="handshake")
        self._connections: set[IncomingConnection] = set()
        self._stopping = threading.Event()
        self.counters = Counters()
        with registry.lock:
            registry.counters.append(self.counters)
        self._thread = threading.Thread(target=self._run, name="receive", daemon=True)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_in, selectors.EVENT_READ, "wake")
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; returns once the thread ended."""
        self._stopping.set()
        self._wake()
        self._thread.join(timeout)
        self._handshakes.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _run(self) -> None:
        selector = self._selector
        perf = time.perf_counter
        try:
            while not self._stopping.is_set():
                began = perf()
                ready = selector.select(_SELECT_TIMEOUT_S)
                if self._connections:
                    self.counters.network_seconds += perf() - began
                for key, mask in ready:
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._serve(key.data, mask)
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

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                log.error("accept failed: %s", error)
                return
            connection = IncomingConnection(
                sock,
                config=self._config,
                identity=self._identity,
                registry=self._registry,
                pool=self.pool,
                decompressor=self._decompressor,
            )
            try:
                self._handshakes.submit(self._handshake, connection)
            except RuntimeError:  # shutting down
                sock.close()

    def _handshake(self, connection: IncomingConnection) -> None:
        """On a handshake thread: the loop takes the connection over once it is proven."""
        if connection.handshake():
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


def _peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
