"""The real receive loop, fed arbitrary bytes after a valid handshake over loopback TCP.

Whatever arrives, `serve()` must end the connection cleanly (no exception escapes the
receiver thread), count only frames that verified, and never allocate ahead of the
bytes that actually arrived.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import tracemalloc
import zlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w5xde.api.v1alpha1 import CompressionSpec
from w5xde.worker import protocol
from w5xde.worker.codec import BatchCompressor, BatchDecompressor, CorruptBatchError
from w5xde.worker.config import WorkerConfig
from w5xde.worker.handshake import Identity, client_handshake
from w5xde.worker.protocol import HEADER_BYTES, CodecId, FrameDecoder, FrameType, ProtocolError
from w5xde.worker.receiver import IncomingConnection, IncomingRegistry

KEY = b"fuzz-key-0123456789abcdef"
# The frames here are `frame` context; tests/unit/test_worker_stream_context.py fuzzes `stream`.
CONFIG = WorkerConfig(
    name="fuzz-0",
    cluster_id="fuzz",
    network={"chunkBytes": 4096},
    compression={"context": "frame"},
)


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


#: What the receiver sent back on the last `serve()` connection (its ACK frames).
ACKS: list[int] = []
#: Holds True when the receiver closed the last `serve()` connection (not a time-out).
ENDED_BY_RECEIVER: list[bool] = []


def serve(
    stream: bytes,
    *,
    registry: IncomingRegistry | None = None,
    session: int = 1,
    resume_from: int = 0,
    shutdown: bool = True,
    config: WorkerConfig = CONFIG,
) -> IncomingRegistry:
    """Send `stream` after a real handshake and serve it with the real receive loop.

    Without `shutdown` the sender keeps its side open: only the receiver can end the
    connection then (a CLOSE frame must); the sender gives up after 10 s.
    """
    client, server = tcp_pair()
    registry = registry if registry is not None else IncomingRegistry()
    handshake: list[Exception | None] = []
    answer = bytearray()
    ACKS.clear()
    ENDED_BY_RECEIVER.clear()

    def send() -> None:
        # No asserts here: how the handshake went is checked in the test's thread.
        try:
            client_handshake(
                client,
                Identity("fuzz", "sender", KEY),
                stream=0,
                session=session,
                resume_from=resume_from,
            )
            handshake.append(None)
            client.sendall(stream)
            if shutdown:
                client.shutdown(socket.SHUT_WR)
            client.settimeout(10)
            while data := client.recv(65536):
                answer.extend(data)
            ENDED_BY_RECEIVER.append(True)
        except OSError as error:
            # The receiver may close first (that is the point of most streams here).
            if not handshake:
                handshake.append(error)
        except Exception as error:
            handshake.append(error)
        finally:
            client.close()

    sender = threading.Thread(target=send)
    sender.start()
    IncomingConnection(
        server, config=config, identity=Identity("fuzz", "fuzz-0", KEY), registry=registry
    ).serve()
    sender.join(10)
    assert not sender.is_alive(), "the sending side never finished"
    assert handshake == [None], f"the handshake failed: {handshake}"
    for frame in FrameDecoder().feed(bytes(answer)):
        assert frame.header.kind == FrameType.ACK, frame
        ACKS.append(frame.header.sequence)
    return registry


@dataclass
class Expected:
    """What the receiver must have counted, from docs/protocol.md's rules."""

    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    lost_batches: int = 0
    duplicate_batches: int = 0
    corrupt_batches: int = 0


def expected_counts(stream: bytes, *, stop_at_close: bool) -> Expected:
    """A model of the receive loop: frames in order until the first one that breaks the
    protocol or fails verification; a sequence below the next expected one is a
    duplicate, one above it counts the gap as lost; only verified frames count.

    The receiver ends after a CLOSE frame, but only once it has handled the rest of the
    bytes of the same `recv`: frames behind a CLOSE may or may not count, so the model
    gives both bounds (`stop_at_close`).
    """
    counted = Expected()
    expected_sequence = 0
    view = memoryview(stream)
    position = 0
    verifier = BatchDecompressor()
    while len(stream) - position >= HEADER_BYTES:
        try:
            header = protocol.parse_header(stream, position)
            # The cluster's batchBytes bounds a frame as soon as its header is in.
            protocol.FrameLimits(CONFIG.workload.batch_bytes).check(header)
        except ProtocolError:
            break
        end = position + HEADER_BYTES + header.payload_length
        if end > len(stream):
            break
        if header.kind == FrameType.CLOSE:
            if stop_at_close:
                break
        elif header.kind != FrameType.DATA:
            break
        elif header.sequence < expected_sequence:
            counted.duplicate_batches += 1
        elif header.sequence - expected_sequence > protocol.REPLAY_WINDOW_FRAMES:
            break  # beyond any window a sender could have: a protocol error
        else:
            counted.lost_batches += header.sequence - expected_sequence
            try:
                verifier.decompress(
                    header.codec,
                    view[position + HEADER_BYTES : end],
                    header.raw_length,
                    header.crc32,
                )
            except CorruptBatchError:
                counted.corrupt_batches += 1
                break
            expected_sequence = header.sequence + 1
            counted.batches += 1
            counted.raw_bytes += header.raw_length
            counted.wire_bytes += end - position
        position = end
    return counted


def counted(registry: IncomingRegistry) -> Expected:
    total = registry.total()
    return Expected(
        total.batches,
        total.raw_bytes,
        total.wire_bytes,
        total.lost_batches,
        total.duplicate_batches,
        total.corrupt_batches,
    )


def assert_counts_match_the_model(stream: bytes, registry: IncomingRegistry) -> None:
    low = expected_counts(stream, stop_at_close=True)
    high = expected_counts(stream, stop_at_close=False)
    found = counted(registry)
    names = ("batches", "raw_bytes", "wire_bytes", "lost_batches", "duplicate_batches")
    for name in (*names, "corrupt_batches"):
        assert getattr(low, name) <= getattr(found, name) <= getattr(high, name), (
            f"{name}: receiver counted {found}, the model says {low} .. {high}"
        )


def none_frame(sequence: int, intact: bool) -> bytes:
    """An uncompressed frame; its CRC32 is wrong unless `intact`."""
    batch = b"plain batch %d " % sequence * 20
    crc = zlib.crc32(batch) ^ (0 if intact else 1)
    return (
        protocol.pack_header(
            FrameType.DATA,
            CodecId.NONE,
            sequence=sequence,
            raw_length=len(batch),
            payload_length=len(batch),
            crc32=crc,
        )
        + batch
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.builds(valid_frame, st.integers(0, 5)),
            st.builds(none_frame, st.integers(0, 5), st.booleans()),
            st.builds(protocol.ack_frame, st.integers(0, 5)),
            st.just(protocol.close_frame()),
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
    assert_counts_match_the_model(stream, registry)
    # A header may declare 4 GiB; the buffer only grows with what was really sent.
    assert peak < 4 * 1024 * 1024


def test_valid_frames_in_a_stream_are_delivered_in_order() -> None:
    stream = b"".join(valid_frame(sequence) for sequence in range(5))
    registry = serve(stream)
    total = registry.total()
    assert total.batches == 5
    assert total.raw_bytes == sum(len(b"valid batch %d " % n * 40) for n in range(5))
    assert total.lost_batches == 0
    assert total.corrupt_batches == 0
    assert_counts_match_the_model(stream, registry)


def test_duplicates_gaps_and_a_corrupt_frame_are_counted_as_such() -> None:
    frames = [valid_frame(n) for n in (0, 1, 1, 0, 4, 5, 5)] + [none_frame(6, intact=False)]
    registry = serve(b"".join(frames) + valid_frame(7))
    total = registry.total()
    assert (total.batches, total.duplicate_batches, total.lost_batches) == (4, 3, 2)
    # The corrupt frame ends the connection: nothing after it counts.
    assert total.corrupt_batches == 1


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
    big = WorkerConfig(
        name="fuzz-0",
        cluster_id="fuzz",
        network={"chunkBytes": 4096},
        workload={"batchBytes": max(sizes)},
        compression={"context": "frame"},
    )
    total = serve(b"".join(frames), config=big).total()
    assert total.batches == 3
    assert total.raw_bytes == sum(sizes)


def test_a_reconnecting_sender_s_replay_is_dropped_as_duplicates() -> None:
    """Delivery state belongs to the sender stream, not the connection: the same session
    replaying its window after a reconnect delivers only what is new."""
    registry = serve(b"".join(valid_frame(n) for n in range(5)))
    serve(b"".join(valid_frame(n) for n in range(2, 8)), registry=registry)
    total = registry.total()
    assert (total.batches, total.duplicate_batches, total.lost_batches) == (8, 3, 0)
    assert registry.senders[("sender", 0)].expected == 8


def test_a_new_session_starts_afresh_from_its_resume_point() -> None:
    registry = serve(b"".join(valid_frame(n) for n in range(5)))
    # A restarted sender (new session) resuming at 3: 3.. are new, nothing is lost.
    serve(
        b"".join(valid_frame(n) for n in range(3, 6)), registry=registry, session=2, resume_from=3
    )
    total = registry.total()
    assert (total.batches, total.duplicate_batches, total.lost_batches) == (8, 0, 0)
    state = registry.senders[("sender", 0)]
    assert (state.session, state.expected) == (2, 6)


def test_a_new_connection_for_the_same_stream_takes_over() -> None:
    """The older connection of a sender stream is shut down when a newer one arrives."""
    registry = IncomingRegistry()
    old_client, old_server = tcp_pair()
    served: list[BaseException | None] = []

    def serve_old() -> None:
        try:
            IncomingConnection(
                old_server,
                config=CONFIG,
                identity=Identity("fuzz", "fuzz-0", KEY),
                registry=registry,
            ).serve()
            served.append(None)
        except BaseException as error:  # reported in the test's thread
            served.append(error)

    old = threading.Thread(target=serve_old)
    old.start()
    client_handshake(
        old_client, Identity("fuzz", "sender", KEY), stream=0, session=1, resume_from=0
    )
    old_client.sendall(valid_frame(0))
    old_client.settimeout(15)
    assert len(old_client.recv(HEADER_BYTES)) == HEADER_BYTES  # the ACK for frame 0
    serve(valid_frame(1), registry=registry)
    # The newer connection delivered frame 1; the older one was shut down under it.
    assert old_client.recv(100) == b""
    old.join(15)
    old_client.close()
    assert served == [None]
    assert registry.total().batches == 2
    assert registry.connected == 0


def test_a_long_stream_split_across_receives_arrives_whole() -> None:
    """Frames cut anywhere by TCP, past the receive buffer's size: what is left of a frame
    moves to the buffer's front and the frame completes there."""
    sizes = [1000 + (n * 7919) % 9000 for n in range(120)]
    frames = []
    for sequence, size in enumerate(sizes):
        batch = os.urandom(size)
        payload, _ = BatchCompressor(CompressionSpec(level=1)).compress(batch)
        header = protocol.pack_header(
            FrameType.DATA,
            CodecId.ZSTD,
            sequence=sequence,
            raw_length=size,
            payload_length=len(payload),
        )
        frames.append(header + bytes(payload))
    stream = b"".join(frames)
    assert len(stream) > 2 * 256 * 1024
    total = serve(stream).total()
    assert (total.batches, total.raw_bytes, total.corrupt_batches) == (120, sum(sizes), 0)


def test_each_receive_that_delivers_acknowledges_the_highest_contiguous_frame() -> None:
    serve(b"".join(valid_frame(n) for n in range(6)))
    # However TCP cut the stream, the ACKs rise and end at the last frame.
    assert ACKS
    assert sorted(ACKS) == ACKS
    assert ACKS[-1] == 5
    # A gap: what follows it is acknowledged as the new highest (counted lost).
    serve(valid_frame(0) + valid_frame(3))
    assert ACKS[-1] == 3
    # Nothing verified, nothing acknowledged.
    serve(b"\xff" * HEADER_BYTES)
    assert ACKS == []


def test_a_close_frame_ends_the_connection_from_the_receiver_s_side() -> None:
    registry = serve(
        b"".join(valid_frame(n) for n in range(3)) + protocol.close_frame(), shutdown=False
    )
    assert registry.total().batches == 3
    assert ACKS[-1] == 2
    # The receiver closed: the sender saw the end of the stream, not its own time-out.
    assert ENDED_BY_RECEIVER == [True]


def test_an_empty_batch_at_the_end_of_the_stream_counts() -> None:
    empty = protocol.pack_header(
        FrameType.DATA, CodecId.NONE, sequence=1, raw_length=0, payload_length=0, crc32=0
    )
    total = serve(valid_frame(0) + empty).total()
    assert (total.batches, total.lost_batches) == (2, 0)
    assert ACKS[-1] == 1


def test_the_receiver_logs_why_it_closes_and_each_batch_in_verbose_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="w5xde")
    total = serve(valid_frame(0) + protocol.ack_frame(0)).total()
    assert total.batches == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "w5xde.receiver"]
    length = len(b"valid batch 0 " * 40)
    assert messages == [
        f"batch 0 from sender verified: {length} bytes",
        "closing stream from sender: protocol error: unexpected ACK frame from a sender",
    ]
    assert total.network_seconds > 0
    assert total.compression_seconds > 0


def test_a_frame_larger_than_the_cluster_s_batch_bytes_closes_the_stream_unbuffered() -> None:
    """The frame limit is the cluster's batchBytes, not the protocol's 64 MiB."""
    small = WorkerConfig(
        name="fuzz-0", cluster_id="fuzz", network={"chunkBytes": 4096},
        workload={"batchBytes": 16384}, compression={"context": "frame"},
    )  # fmt: skip
    header = protocol.pack_header(
        FrameType.DATA, CodecId.NONE, sequence=0, raw_length=16385, payload_length=16385
    )
    tracemalloc.start()
    try:
        total = serve(valid_frame(0) + header + bytes(8192), config=small).total()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (total.batches, total.protocol_errors) == (1, 1)
    assert peak < 2 * 1024 * 1024


def test_a_sequence_beyond_the_replay_window_closes_the_stream_and_counts_no_loss() -> None:
    """A forged sequence 10^9 ahead must neither black-hole the stream nor add 10^9 lost."""
    total = serve(valid_frame(0) + valid_frame(10**9)).total()
    assert (total.batches, total.lost_batches, total.protocol_errors) == (1, 0, 1)
    # A gap within the window is a loss the receiver counts, and the stream goes on.
    total = serve(valid_frame(0) + valid_frame(protocol.REPLAY_WINDOW_FRAMES)).total()
    assert (total.batches, total.lost_batches, total.protocol_errors) == (
        2,
        protocol.REPLAY_WINDOW_FRAMES - 1,
        0,
    )
