"""`compression.context: stream`: one zstd history per connection, negotiated in the Hello.

Real zstd, real sockets, real workers: the codec's round trip and its bounds, the
Hello's negotiation (and what a v2 peer sees), and the receiver decoding a connection's
payloads in order, duplicates included, closing a connection whose payload does not
decode in its context as a protocol error.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from unit.loopback import KEY, wait_for, worker_config
from w5xde.api.v1alpha1 import CompressionSpec, Profile
from w5xde.local.run import free_ports, issue_identities
from w5xde.worker import protocol
from w5xde.worker.codec import (
    BatchCompressor,
    CorruptBatchError,
    StreamContextError,
    StreamDecompressor,
)
from w5xde.worker.handshake import Identity, client_handshake, server_handshake
from w5xde.worker.protocol import HEADER_BYTES, CodecId, Context, FrameDecoder, FrameType
from w5xde.worker.runtime import Worker
from w5xde.worker.sources import PoolSource, synthetic_pool

POOL = synthetic_pool(Profile.MIXED, 1024 * 1024)


def _batches(size: int, count: int) -> list[bytes]:
    source = PoolSource(POOL, size)
    return [bytes(source.next_batch()) for _ in range(count)]


def _stream_compressor(level: int = 1) -> BatchCompressor:
    return BatchCompressor(CompressionSpec(level=level), stream=True)


def _payloads(
    batches: list[bytes], compressor: BatchCompressor | None = None
) -> list[tuple[bytes, int, int]]:
    """(payload, crc32, codec) of each batch through one stream compressor."""
    compressor = compressor if compressor is not None else _stream_compressor()
    out = []
    for batch in batches:
        payload, crc, codec, flags = compressor.compress_frame(batch)
        assert flags == 0  # never raw-fallback: the batch is in the history now
        out.append((bytes(payload), crc, codec))
    return out


# --- the codec ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [3600, 65536, 300 * 1024])
def test_stream_payloads_decode_in_order_to_the_batches(size: int) -> None:
    batches = _batches(size, 12)
    decoder = StreamDecompressor()
    independent = zstandard.ZstdDecompressor().decompressobj()
    for batch, (payload, crc, codec) in zip(batches, _payloads(batches), strict=True):
        assert decoder.decompress(CodecId(codec), memoryview(payload), len(batch), crc) == size
        # An independent zstd decoder agrees on the bytes, not only on the length.
        assert independent.decompress(payload) == batch


def test_the_history_makes_later_payloads_smaller_than_frames() -> None:
    """The point of `stream`: on the mixed pool at level 1, 3.6 KB batches compress
    better with history than each on its own."""
    batches = _batches(3600, 400)
    stream = sum(len(payload) for payload, _, _ in _payloads(batches))
    frame = BatchCompressor(CompressionSpec(level=1))
    alone = sum(len(frame.compress_frame(batch)[0]) for batch in batches)
    assert stream < alone / 1.03


def test_a_level_change_ends_the_frame_and_raw_batches_stay_outside_the_stream() -> None:
    compressor = _stream_compressor(3)
    decoder = StreamDecompressor()
    independent = zstandard.ZstdDecompressor()
    batches = _batches(20000, 16)
    plan = {4: 1, 8: 0, 10: 6}  # batch index -> level from there (0: raw)
    zstd_bytes = bytearray()
    expected = bytearray()
    for index, batch in enumerate(batches):
        if index in plan:
            compressor.set_level(plan[index])
        payload, crc, codec, _ = compressor.compress_frame(batch)
        assert decoder.decompress(CodecId(codec), memoryview(payload), len(batch), crc) == 20000
        if codec == CodecId.ZSTD:
            zstd_bytes += payload
            expected += batch
        else:
            assert index in (8, 9)
            assert bytes(payload) == batch
    # Three zstd frames (levels 3, 1, 6), each ended before the next one starts.
    assert independent.decompressobj(read_across_frames=True).decompress(bytes(zstd_bytes)) == (
        bytes(expected)
    )


def test_a_payload_out_of_its_context_is_a_stream_context_error() -> None:
    batches = _batches(65536, 4)
    payloads = _payloads(batches)
    fresh = StreamDecompressor()
    # A connection's second payload, first on another connection: no frame starts there.
    payload, crc, codec = payloads[1]
    with pytest.raises(StreamContextError, match="not a zstd frame"):
        fresh.decompress(CodecId(codec), memoryview(payload), len(batches[1]), crc)


def test_a_payload_must_decode_to_exactly_its_raw_length() -> None:
    batch = _batches(65536, 1)[0]
    ((payload, crc, codec),) = _payloads([batch])
    with pytest.raises(StreamContextError, match="decoded 65536 bytes, header says 65537"):
        StreamDecompressor().decompress(CodecId(codec), memoryview(payload), 65537, crc)


def test_a_payload_that_does_not_end_on_a_block_boundary_is_refused() -> None:
    batch = _batches(65536, 1)[0]
    ((payload, crc, codec),) = _payloads([batch])
    with pytest.raises(StreamContextError, match="block"):
        StreamDecompressor(verify_crc=False).decompress(
            CodecId(codec), memoryview(payload[:-5]), 65536, crc
        )


def test_a_crc_mismatch_is_a_corrupt_batch_when_no_tls_covers_the_payload() -> None:
    batch = _batches(65536, 1)[0]
    ((payload, crc, codec),) = _payloads([batch])
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0x10
    with pytest.raises(CorruptBatchError, match="CRC32"):
        StreamDecompressor().decompress(CodecId(codec), memoryview(damaged), 65536, crc)


def test_a_window_beyond_the_protocol_s_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=20)
    frame = zstandard.ZstdCompressor(compression_params=params).compressobj()
    batch = _batches(65536, 1)[0]
    payload = frame.compress(batch) + frame.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    with pytest.raises(StreamContextError, match="window above 131072"):
        StreamDecompressor(verify_crc=False).decompress(
            CodecId.ZSTD, memoryview(payload), len(batch), 0
        )


def _rle_bomb(blocks: int) -> bytes:
    """A zstd frame header, then `blocks` RLE blocks of 128 KiB each (2 bytes apiece
    on the wire, 128 KiB each decoded)."""
    header = (0xFD2FB528).to_bytes(4, "little") + bytes((0x00, (17 - 10) << 3))
    block = ((128 * 1024) << 3 | 1 << 1).to_bytes(3, "little") + b"A"
    return header + block * blocks


def test_a_payload_that_would_decode_beyond_its_raw_length_stops_within_one_block() -> None:
    bomb = _rle_bomb(4096)  # 16 KiB on the wire, 512 MiB decoded
    tracemalloc.start()
    try:
        with pytest.raises(StreamContextError, match="more than its raw length 1000"):
            StreamDecompressor(verify_crc=False).decompress(CodecId.ZSTD, memoryview(bomb), 1000, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    # Two such blocks decode to exactly 256 KiB: accepted when the header says so.
    assert StreamDecompressor(verify_crc=False).decompress(
        CodecId.ZSTD, memoryview(_rle_bomb(2)), 256 * 1024, 0
    ) == (256 * 1024)
    with pytest.raises(StreamContextError, match="block of 131073 bytes"):
        StreamDecompressor(verify_crc=False).decompress(
            CodecId.ZSTD,
            memoryview(
                _rle_bomb(0) + ((128 * 1024 + 1) << 3 | 1 << 1).to_bytes(3, "little") + b"A"
            ),
            200_000,
            0,
        )


# --- the Hello ---------------------------------------------------------------------


def _handshake(
    sender_context: Context, receiver_context: Context
) -> tuple[BaseException | None, BaseException | None, bytes]:
    """Run both sides over a socketpair; (client error, server error, Hello bytes)."""
    client, server = socket.socketpair()
    server_error: list[BaseException | None] = []
    hello_bytes = bytearray()

    def serve() -> None:
        try:
            accepted = server_handshake(server, Identity("c", "rx", KEY), context=receiver_context)
            # encode() gives back exactly the bytes decoded (test_protocol_frames pins it).
            hello_bytes.extend(accepted.hello.encode())
            server_error.append(None)
        except BaseException as error:  # checked in the test's own thread
            server_error.append(error)
        finally:
            server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    client_error: BaseException | None = None
    try:
        client_handshake(
            client, Identity("c", "tx", KEY), stream=0, session=1, resume_from=0,
            context=sender_context,
        )  # fmt: skip
    except BaseException as error:
        client_error = error
    thread.join(10)
    client.close()
    return client_error, server_error[0], bytes(hello_bytes)


def test_matching_contexts_shake_hands_and_a_frame_sender_speaks_v2() -> None:
    for context in (Context.STREAM, Context.FRAME):
        client_error, server_error, hello = _handshake(context, context)
        assert (client_error, server_error) == (None, None)
        version = int.from_bytes(hello[4:6], "little")
        assert version == (3 if context == Context.STREAM else 2)
    # A frame sender's Hello is byte for byte the v2 layout (a v2 receiver parses it):
    # fixed part, two length-prefixed names, nothing after.
    _, _, hello = _handshake(Context.FRAME, Context.FRAME)
    fixed = protocol.HELLO_FIXED_BYTES
    assert len(hello) == fixed + 1 + hello[fixed] + 1 + len(b"tx")


def test_a_context_mismatch_is_refused_with_a_reason_naming_the_field() -> None:
    client_error, server_error, _ = _handshake(Context.STREAM, Context.FRAME)
    assert "WRONG_CONTEXT" in str(client_error)
    assert "compression.context" in str(client_error)
    assert "compression.context" in str(server_error)
    assert "'stream'" in str(server_error)
    # A v2 sender (frame) at a stream receiver is told WRONG_VERSION, which v2 knows.
    client_error, server_error, _ = _handshake(Context.FRAME, Context.STREAM)
    assert "WRONG_VERSION" in str(client_error)
    assert "compression.context" in str(server_error)
    assert "'frame' (protocol v2)" in str(server_error)


# --- the receiver ------------------------------------------------------------------


def _frames(batches: list[bytes], first: int, compressor: BatchCompressor) -> list[bytes]:
    out = []
    for offset, (batch, (payload, crc, codec)) in enumerate(
        zip(batches, _payloads(batches, compressor), strict=True)
    ):
        header = protocol.pack_header(
            FrameType.DATA,
            CodecId(codec),
            sequence=first + offset,
            raw_length=len(batch),
            payload_length=len(payload),
            crc32=crc,
        )
        out.append(header + payload)
    return out


def _connect(port: int, session: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    client_handshake(
        sock, Identity("unit", "hand-written", KEY), stream=0, session=session, resume_from=0,
        context=Context.STREAM,
    )  # fmt: skip
    sock.settimeout(10)
    return sock


def _send_and_wait_ack(port: int, session: int, frames: list[bytes], last: int) -> None:
    sock = _connect(port, session)
    sock.sendall(b"".join(frames))
    decoder = FrameDecoder()
    acked = -1
    while acked < last:
        for frame in decoder.feed(sock.recv(HEADER_BYTES * 16)):
            assert frame.header.kind == FrameType.ACK
            acked = frame.header.sequence
    sock.sendall(protocol.close_frame())
    sock.close()


def test_a_replay_in_a_fresh_context_is_decoded_duplicates_included(
    workers: Callable[..., list[Worker]],
) -> None:
    """The receiver must run the duplicates through the new connection's decoder: the
    frames after them refer back to them (skipping them would fail those frames)."""
    (receiver,) = workers(1)
    port = receiver.config.listen_port()
    session = int.from_bytes(os.urandom(8), "little")
    batches = _batches(16384, 15)
    _send_and_wait_ack(port, session, _frames(batches[:10], 0, _stream_compressor()), last=9)
    # The sender reconnects and replays 5..14, recompressed into a fresh context.
    _send_and_wait_ack(port, session, _frames(batches[5:], 5, _stream_compressor()), last=14)
    report = receiver.report()
    assert report.batches == 15
    assert report.raw_bytes == 15 * 16384
    assert receiver.extras().duplicate_batches == 5
    assert report.protocol_errors == 0


def test_a_payload_out_of_context_closes_the_connection_as_a_protocol_error(
    workers: Callable[..., list[Worker]],
) -> None:
    (receiver,) = workers(1)
    port = receiver.config.listen_port()
    session = int.from_bytes(os.urandom(8), "little")
    batches = _batches(16384, 6)
    good = _frames(batches[:3], 0, _stream_compressor())
    # Frame 3 starts another connection's stream (a zstd frame header) in the middle of
    # this one's frame: it cannot decode here.
    other = _frames(batches[3:4], 0, _stream_compressor())[0]
    foreign = (
        protocol.pack_header(
            FrameType.DATA,
            CodecId.ZSTD,
            sequence=3,
            raw_length=16384,
            payload_length=len(other) - HEADER_BYTES,
            crc32=int.from_bytes(other[20:24], "little"),
        )
        + other[HEADER_BYTES:]
    )
    sock = _connect(port, session)
    sock.sendall(b"".join([*good, foreign]))
    received = bytearray()
    while data := sock.recv(4096):  # the receiver closes the connection
        received += data
    sock.close()
    acks = FrameDecoder().feed(bytes(received))
    assert all(frame.header.sequence <= 2 for frame in acks)  # nothing past the good ones
    report = wait_for(lambda: (r := receiver.report()).protocol_errors and r)
    assert report.protocol_errors == 1
    assert report.batches == 3  # the three good ones, once each
    assert report.corrupt_batches == 0
    # The sender's next connection (a fresh context) replays from its first
    # unacknowledged frame: what the receiver already verified is a duplicate.
    _send_and_wait_ack(port, session, _frames(batches, 0, _stream_compressor()), last=5)
    assert receiver.report().batches == 6
    assert receiver.extras().duplicate_batches == 3


def test_a_stream_pair_over_mutual_tls_delivers_every_batch(tmp_path: Path) -> None:
    """Two workers with TLS identities: stream context end to end, no CRC (the record
    MAC covers each payload), every batch verified."""
    ports = free_ports(2)
    names = [f"t-{index}" for index in range(2)]
    sections = issue_identities(names, tmp_path)
    group = [
        Worker(
            worker_config(
                index,
                ports,
                tls=sections[names[index]],
                compression={"level": 1, "context": "stream"},
            ),
            KEY,
        )
        for index in range(2)
    ]
    for worker in group:
        worker.start()
    try:
        wait_for(lambda: all(worker.report().batches > 200 for worker in group))
        time.sleep(0.5)
        for worker in group:
            report = worker.report()
            assert report.protocol_errors == 0
            assert report.corrupt_batches == 0
            assert report.lost_batches == 0
    finally:
        for worker in group:
            worker.stop(grace_seconds=0.5)
