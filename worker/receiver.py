"""Incoming streams: handshake, recv_into a reused buffer, verify, decompress, acknowledge.

Delivery state (the next expected sequence of each sender stream) outlives a
connection, so when a sender reconnects and replays its window the frames this
worker already verified are recognised and dropped as duplicates.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from w5xde.worker import protocol
from w5xde.worker.codec import BatchDecompressor, CorruptBatchError
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import Counters
from w5xde.worker.handshake import Identity, server_handshake
from w5xde.worker.protocol import HEADER_BYTES, MAX_PAYLOAD_BYTES, FrameType, ProtocolError
from w5xde.worker.sockets import rearm_quickack

log = logging.getLogger("w5xde.receiver")

_MIN_BUFFER_BYTES = 256 * 1024


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
    """Serves one accepted connection until the peer closes it or breaks the protocol."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        config: WorkerConfig,
        identity: Identity,
        registry: IncomingRegistry,
    ) -> None:
        self._sock = sock
        self._config = config
        self._identity = identity
        self._registry = registry
        self.counters = Counters()
        self._decompressor = BatchDecompressor()
        self._verbose = logging.getLogger("w5xde").isEnabledFor(logging.INFO)

    def serve(self) -> None:
        sock = self._sock
        try:
            try:
                hello = server_handshake(sock, self._identity)
            except (OSError, ProtocolError) as error:
                with self._registry.lock:
                    self._registry.rejected_connections += 1
                log.error("handshake from %s refused: %s", _peer_name(sock), error)
                return
            with self._registry.lock:
                self._registry.counters.append(self.counters)
            state = self._registry.claim(hello, sock, self)
            try:
                self._receive(sock, state, hello.sender)
            except TakenOverError as error:
                log.warning("closing stream from %s: %s", hello.sender, error)
            except ProtocolError as error:
                log.error("closing stream from %s: %s", hello.sender, error)
            except CorruptBatchError as error:
                log.error("closing stream from %s: corrupt batch: %s", hello.sender, error)
            except OSError as error:
                log.warning("stream from %s ended: %s", hello.sender, error)
            finally:
                self._registry.release(hello, sock, self.counters)
        finally:
            sock.close()

    def _receive(self, sock: socket.socket, state: SenderState, sender: str) -> None:
        network = self._config.network
        chunk = network.chunk_bytes
        quickack = network.tcp_quick_ack
        counters = self.counters
        decompress = self._decompressor.decompress
        parse_header = protocol.parse_header
        buffer = bytearray(max(2 * chunk, _MIN_BUFFER_BYTES))
        view = memoryview(buffer)
        limit = MAX_PAYLOAD_BYTES + HEADER_BYTES + chunk
        start = end = 0
        perf = time.perf_counter
        while True:
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
                    buffer, view = grown, memoryview(grown)
            began = perf()
            count = sock.recv_into(view[end : end + chunk])
            counters.network_seconds += perf() - began
            if count == 0:
                return
            if quickack:
                rearm_quickack(sock)
            end += count
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
                        counters.batches += 1
                        counters.raw_bytes += header.raw_length
                        counters.wire_bytes += frame_end - start
                        if self._verbose:
                            log.info(
                                "batch %d from %s verified: %d bytes",
                                sequence,
                                sender,
                                header.raw_length,
                            )
                    delivered = True
                elif header.kind == FrameType.CLOSE:
                    closing = True
                else:
                    raise ProtocolError(f"unexpected {header.kind.name} frame from a sender")
                start = frame_end
            if start == end:
                start = end = 0
            if delivered and state.expected > 0:
                began = perf()
                sock.sendall(protocol.ack_frame(state.expected - 1))
                counters.network_seconds += perf() - began
            if closing:
                return


def _peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"
