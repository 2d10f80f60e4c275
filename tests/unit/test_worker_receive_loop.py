"""One receive thread serves many connections, from a pool of buffers that stays small."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from w5xde.api.v1alpha1 import CompressionSpec
from w5xde.worker import protocol
from w5xde.worker.codec import BatchCompressor
from w5xde.worker.config import WorkerConfig
from w5xde.worker.handshake import Identity, client_handshake
from w5xde.worker.protocol import HEADER_BYTES, CodecId, FrameDecoder, FrameType
from w5xde.worker.receiver import (
    HANDSHAKE_THREADS,
    IncomingConnection,
    IncomingRegistry,
    ReceiveLoop,
)

KEY = b"loop-key-0123456789abcdef"
# Hand-written frames below are `frame` context (each zstd frame on its own).
CONFIG = WorkerConfig(
    name="loop-0",
    cluster_id="loop",
    network={"chunkBytes": 16384},
    compression={"context": "frame"},
)
FRAMES = 40


def frames(stream: int) -> bytes:
    compressor = BatchCompressor(CompressionSpec(level=1))
    out = []
    for sequence in range(FRAMES):
        batch = (b"stream %d batch %d " % (stream, sequence)) * 400
        payload, _ = compressor.compress(batch)
        header = protocol.pack_header(
            FrameType.DATA,
            CodecId.ZSTD,
            sequence=sequence,
            raw_length=len(batch),
            payload_length=len(payload),
        )
        out.append(header + bytes(payload))
    return b"".join(out)


@pytest.fixture
def loop() -> Iterator[tuple[ReceiveLoop, IncomingRegistry, int]]:
    listener = socket.create_server(("127.0.0.1", 0))
    registry = IncomingRegistry()
    receive = ReceiveLoop(
        listener, config=CONFIG, identity=Identity("loop", "loop-0", KEY), registry=registry
    )
    receive.start()
    yield receive, registry, listener.getsockname()[1]
    receive.stop()


def send_stream(port: int, stream: int, errors: list[BaseException]) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            client_handshake(
                sock, Identity("loop", f"sender-{stream}", KEY), stream=0, session=1, resume_from=0
            )
            data = frames(stream)
            # Odd-sized pieces: frames arrive split across receives and wake-ups.
            for offset in range(0, len(data), 7001):
                sock.sendall(data[offset : offset + 7001])
            decoder = FrameDecoder()
            acked = -1
            sock.settimeout(20)
            while acked < FRAMES - 1:
                answer = sock.recv(HEADER_BYTES * 64)
                if not answer:
                    raise ConnectionError("the receiver closed the connection")
                for frame in decoder.feed(answer):
                    assert frame.header.kind == FrameType.ACK
                    acked = frame.header.sequence
            sock.sendall(protocol.close_frame())
    except BaseException as error:  # handed to the test thread
        errors.append(error)


def test_many_connections_one_thread_few_buffers(
    loop: tuple[ReceiveLoop, IncomingRegistry, int],
) -> None:
    receive, registry, port = loop
    errors: list[BaseException] = []
    senders = [
        threading.Thread(target=send_stream, args=(port, stream, errors)) for stream in range(24)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert not errors
    total = registry.total()
    assert total.batches == 24 * FRAMES
    assert total.lost_batches == 0
    assert total.corrupt_batches == 0
    names = [thread.name for thread in threading.enumerate()]
    assert names.count("receive") == 1
    assert sum(name.startswith("handshake") for name in names) <= HANDSHAKE_THREADS
    # 24 connections with partial frames in flight, but the buffers are pooled.
    assert receive.pool.allocated <= 3


def test_a_refused_handshake_is_counted_and_the_loop_goes_on(
    loop: tuple[ReceiveLoop, IncomingRegistry, int],
) -> None:
    receive, registry, port = loop
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        pytest.raises(protocol.ProtocolError),
    ):
        client_handshake(
            sock, Identity("loop", "intruder", b"wrong-key-0123456789"), stream=0, session=1,
            resume_from=0,
        )  # fmt: skip
    errors: list[BaseException] = []
    send_stream(port, 1, errors)
    assert not errors
    assert registry.refused_connections == 1
    assert registry.total().batches == FRAMES
    assert receive.alive


def test_stop_closes_the_listener_and_the_connections(
    loop: tuple[ReceiveLoop, IncomingRegistry, int],
) -> None:
    receive, registry, port = loop
    sock = socket.create_connection(("127.0.0.1", port))
    client_handshake(sock, Identity("loop", "s", KEY), stream=0, session=1, resume_from=0)
    receive.stop()
    assert not receive.alive
    sock.settimeout(5)
    assert sock.recv(1) == b""  # closed by the loop
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert registry.connected == 0


def test_acks_wait_for_a_full_socket_and_only_the_newest_goes_out() -> None:
    """A sender that does not read its ACKs for a while: the receiver never blocks on them,
    keeps only the newest, and sends it once the socket takes it again."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        # Small buffers, set before connecting: no autotuning makes room behind our back.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    registry = IncomingRegistry()
    connection = IncomingConnection(
        server, config=CONFIG, identity=Identity("loop", "loop-0", KEY), registry=registry
    )
    shaken = threading.Thread(target=connection.handshake)
    shaken.start()
    client_handshake(client, Identity("loop", "slow", KEY), stream=0, session=1, resume_from=0)
    shaken.join(10)
    server.setblocking(False)
    # Fill the receiver -> sender direction so that an ACK cannot be sent.
    junk = 0
    refused = 0
    while refused < 5:
        try:
            junk += server.send(b"\0" * 65536)
            refused = 0
        except BlockingIOError:
            refused += 1
            time.sleep(0.05)
    data = frames(7)
    split = data.index(b"", len(data) // 2)  # any cut: frames may straddle it
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)

        def deliver(payload: bytes, until: int) -> None:
            client.sendall(payload)
            while registry.total().batches < until:
                for _, mask in selector.select(5):
                    assert connection.on_ready(mask)

        deliver(data[:split], 1)
        first = registry.total().batches
        assert connection.wants_write
        assert connection.events & selectors.EVENT_WRITE
        deliver(data[split:], FRAMES)
        assert connection.wants_write
    # The sender reads again: the junk, then the ACKs.
    client.settimeout(10)
    seen = 0
    while seen < junk:
        seen += len(client.recv(min(1 << 20, junk - seen)))
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_WRITE)
        while connection.wants_write:
            for _, mask in selector.select(5):
                assert connection.on_ready(mask)
    decoder = FrameDecoder()
    acks: list[int] = []
    while not acks or acks[-1] < FRAMES - 1:
        acks += [frame.header.sequence for frame in decoder.feed(client.recv(4096))]
    assert acks[-1] == FRAMES - 1
    # Held back while the socket was full: the ACK of the first part and the newest, no more.
    assert acks[0] == first - 1
    assert len(acks) <= 2
    client.close()
    connection.finish()
    assert registry.total().batches == FRAMES


def test_an_unexpected_error_ends_only_that_connection(
    loop: tuple[ReceiveLoop, IncomingRegistry, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    receive, registry, port = loop
    real_parse = IncomingConnection._parse

    def faulty(self: IncomingConnection, view: memoryview, start: int, end: int) -> object:
        if self.sender == "sender-666":
            raise RuntimeError("a bug in the receive path")
        return real_parse(self, view, start, end)

    monkeypatch.setattr(IncomingConnection, "_parse", faulty)
    failed: list[BaseException] = []
    send_stream(port, 666, failed)
    assert failed, "the faulty connection should have been closed"
    fine: list[BaseException] = []
    send_stream(port, 1, fine)
    assert not fine
    assert receive.alive
    assert registry.total().batches == FRAMES


def test_silent_connections_beyond_the_cap_are_refused_at_once_and_the_rest_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood of connections that never speak holds no thread and no slot for long."""
    from w5xde.worker import receiver

    monkeypatch.setattr(receiver, "HANDSHAKE_TIMEOUT_S", 0.5)
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    registry = IncomingRegistry()
    receive = ReceiveLoop(
        listener, config=CONFIG, identity=Identity("loop", "loop-0", KEY), registry=registry
    )
    receive.start()
    port = listener.getsockname()[1]
    extra = 20
    flood = [
        socket.create_connection(("127.0.0.1", port))
        for _ in range(receiver.MAX_PENDING_HANDSHAKES + extra)
    ]
    try:
        closed_at: list[float] = []
        began = time.monotonic()
        for sock in flood:
            sock.settimeout(5)
            try:
                data = sock.recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b"", "a silent connection got an answer"
            closed_at.append(time.monotonic() - began)
        # Every silent connection is gone by the deadline (plus scheduling slack), none later.
        assert max(closed_at) < 0.5 + 1.5
        assert registry.refused_connections == len(flood)
        errors: list[BaseException] = []
        send_stream(port, 3, errors)
        assert not errors
        assert registry.total().batches == FRAMES
        assert receive.alive
    finally:
        for sock in flood:
            sock.close()
        receive.stop()


def test_a_dead_receive_loop_is_not_alive(loop: tuple[ReceiveLoop, IncomingRegistry, int]) -> None:
    receive, _, _ = loop
    assert receive.alive
    receive.stop()
    assert not receive.alive
