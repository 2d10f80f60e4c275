"""The real receive loop, fed arbitrary bytes after a valid handshake over loopback TCP.

Whatever arrives, `serve()` must end the connection cleanly (no exception escapes the
receiver thread), count only frames that verified, and never allocate ahead of the
bytes that actually arrived.
"""

from __future__ import annotations

import os
import socket
import threading
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from w5xde.api.v1alpha1 import CompressionSpec
from w5xde.worker import protocol
from w5xde.worker.codec import BatchCompressor
from w5xde.worker.config import WorkerConfig
from w5xde.worker.handshake import Identity, client_handshake
from w5xde.worker.protocol import CodecId, FrameType
from w5xde.worker.receiver import IncomingConnection, IncomingRegistry

KEY = b"fuzz-key-0123456789abcdef"
CONFIG = WorkerConfig(name="fuzz-0", cluster_id="fuzz", network={"chunkBytes": 4096})


def valid_frame(sequence: int, repeat: int = 40) -> bytes:
    batch = b"valid batch %d " % sequence * repeat
    payload, _ = BatchCompressor(CompressionSpec(level=1)).compress(batch)
    header = protocol.pack_header(
        FrameType.DATA,
        CodecId.ZSTD,
        sequence=sequence,
        raw_length=len(batch),
        payload_length=len(payload),
    )
    return header + bytes(payload)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (TCP_QUICKACK and friends need real TCP)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def serve(stream: bytes) -> IncomingRegistry:
    client, server = tcp_pair()
    registry = IncomingRegistry()

    def send() -> None:
        try:
            client_handshake(
                client, Identity("fuzz", "sender", KEY), stream=0, session=1, resume_from=0
            )
            client.sendall(stream)
            client.shutdown(socket.SHUT_WR)
            while client.recv(65536):
                pass
        except OSError:
            pass
        finally:
            client.close()

    sender = threading.Thread(target=send)
    sender.start()
    IncomingConnection(
        server, config=CONFIG, identity=Identity("fuzz", "fuzz-0", KEY), registry=registry
    ).serve()
    sender.join(10)
    return registry


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.builds(valid_frame, st.integers(0, 5)),
            st.builds(
                lambda kind, codec, raw, size: protocol.HEADER.pack(
                    kind, codec, 0, 0, raw, size, 0
                ),
                st.integers(0, 4),
                st.integers(0, 2),
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
            ),
        ),
        max_size=6,
    )
)
def test_any_bytes_after_the_handshake_end_cleanly(pieces: list[bytes]) -> None:
    stream = b"".join(pieces)
    tracemalloc.start()
    try:
        registry = serve(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = registry.total()
    assert total.batches <= stream.count(b"valid batch") + 1
    assert total.raw_bytes >= 0
    # A header may declare 4 GiB; the buffer only grows with what was really sent.
    assert peak < 4 * 1024 * 1024


def test_valid_frames_in_a_stream_are_delivered_in_order() -> None:
    registry = serve(b"".join(valid_frame(sequence) for sequence in range(5)))
    total = registry.total()
    assert total.batches == 5
    assert total.lost_batches == 0
    assert total.corrupt_batches == 0


def test_frames_before_garbage_count_and_the_garbage_ends_the_connection() -> None:
    stream = b"".join(valid_frame(sequence) for sequence in range(3)) + b"\xff" * 100
    total = serve(stream).total()
    assert total.batches == 3


def test_a_header_declaring_a_huge_frame_allocates_only_what_arrives() -> None:
    header = protocol.HEADER.pack(FrameType.DATA, CodecId.ZSTD, 0, 0, 60_000_000, 60_000_000, 0)
    tracemalloc.start()
    try:
        total = serve(header + b"z" * 100_000).total()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total.batches == 0
    assert peak < 4 * 1024 * 1024


def test_frames_bigger_than_the_buffer_grow_it_and_arrive() -> None:
    compressor = BatchCompressor(CompressionSpec(level=1))
    sizes = [3 * 1024 * 1024, 1000, 700_000]
    frames = []
    for sequence, size in enumerate(sizes):
        batch = os.urandom(size)
        payload, _ = compressor.compress(batch)
        frames.append(
            protocol.pack_header(
                FrameType.DATA,
                CodecId.ZSTD,
                sequence=sequence,
                raw_length=size,
                payload_length=len(payload),
            )
            + bytes(payload)
        )
    # Random data does not compress: the first frame is 12x the initial 256 KiB buffer.
    assert len(frames[0]) > 3 * 1024 * 1024
    total = serve(b"".join(frames)).total()
    assert total.batches == 3
    assert total.raw_bytes == sum(sizes)
