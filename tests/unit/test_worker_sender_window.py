"""The sender's replay window against a hand-written receiver on real loopback TCP.

The test plays the receiver: it accepts, runs the real handshake, reads the frames and
acknowledges exactly what it chooses, so the window's rules are checked one by one:
contiguous sequences, delivery counted on acknowledgement only, a bounded window, a
replay from the first unacknowledged frame after a reconnect, and what is handed on
when the peer leaves.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import zstandard

from w5xde.api.v1alpha1 import Profile
from w5xde.worker import protocol, sender
from w5xde.worker.config import WorkerConfig
from w5xde.worker.handshake import Identity, server_handshake
from w5xde.worker.protocol import HEADER_BYTES, CodecId, FrameDecoder, FrameType
from w5xde.worker.sender import OutgoingStream
from w5xde.worker.sources import BatchSource, FileBatch, FileSource, PoolSource, synthetic_pool

KEY = b"window-key-0123456789abcdef"
BATCH = 4096
POOL = synthetic_pool(Profile.MIXED, 256 * 1024)
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


class CountingSource(PoolSource):
    """The stream's batches, counted as it takes them."""

    def __init__(self) -> None:
        super().__init__(POOL, BATCH)
        self.taken = 0

    def next_batch(self) -> memoryview:
        self.taken += 1
        return super().next_batch()


def expected_batch(sequence: int) -> bytes:
    """What the stream's `sequence`-th batch is (a fresh source gives the same ones)."""
    source = PoolSource(POOL, BATCH)
    for _ in range(sequence):
        source.next_batch()
    return bytes(source.next_batch())


@dataclass
class Receiver:
    """One accepted, handshaken connection and the frames read from it."""

    sock: socket.socket
    hello: protocol.Hello
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    frames: list[protocol.Frame] = field(default_factory=list)

    def read_until(self, count: int) -> list[protocol.Frame]:
        """Read until `count` frames have arrived on this connection in all."""
        self.sock.settimeout(15)
        while len(self.frames) < count:
            data = self.sock.recv(1 << 16)
            assert data, f"the stream closed after {len(self.frames)} frames"
            self.frames += self.decoder.feed(data)
        return self.frames

    def ack(self, sequence: int) -> None:
        self.sock.sendall(protocol.ack_frame(sequence))


class Peer:
    """A listening socket the stream connects to; `accept()` plays the receiver."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"

    def accept(self, context: protocol.Context = protocol.Context.FRAME) -> Receiver:
        sock, _ = self.listener.accept()
        hello = server_handshake(sock, Identity("unit", "rx-0", KEY), context=context).hello
        return Receiver(sock, hello)


@pytest.fixture
def peer() -> Iterator[Peer]:
    created = Peer()
    yield created
    created.listener.close()


@pytest.fixture
def start_stream(
    peer: Peer,
) -> Iterator[Callable[..., tuple[OutgoingStream, CountingSource]]]:
    streams: list[OutgoingStream] = []

    def start(
        codec: str = "zstd", context: str = "frame", source: BatchSource | None = None
    ) -> tuple[OutgoingStream, CountingSource]:
        config = WorkerConfig.model_validate(
            {
                "name": "tx-0",
                "clusterId": "unit",
                "peers": [peer.address],
                "workload": {"batchBytes": BATCH},
                "compression": {"level": 1, "codec": codec, "context": context},
            }
        )
        counting = CountingSource()
        stream = OutgoingStream(
            config=config,
            identity=Identity("unit", "tx-0", KEY),
            peer=peer.address,
            stream=0,
            source=source or counting,
            rate_bytes_per_second=0,
        )
        stream.start()
        streams.append(stream)
        return stream, counting

    yield start
    for stream in streams:
        stream.abort()
        stream.join(10)
        assert not stream.is_alive()


def blocked_on_a_full_window(stream: OutgoingStream) -> bool:
    """The stream's thread is waiting for acknowledgements because its window is full
    (read from its stack: the only place a test can see "it stopped producing")."""
    frame = sys._current_frames().get(stream.ident or -1)
    while frame is not None:
        # `in`: under mutation testing the function runs under a longer name.
        if "_read_acks" in frame.f_code.co_name and frame.f_locals.get("wait") is True:
            return True
        frame = frame.f_back
    return False


def test_frames_carry_contiguous_sequences_and_the_source_s_bytes(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    start_stream()
    receiver = peer.accept()
    assert (receiver.hello.sender, receiver.hello.stream, receiver.hello.resume_from) == (
        "tx-0",
        0,
        0,
    )
    frames = receiver.read_until(20)[:20]
    assert [frame.header.sequence for frame in frames] == list(range(20))
    decompress = zstandard.ZstdDecompressor().decompress
    for sequence, frame in enumerate(frames):
        assert frame.header.kind == FrameType.DATA
        assert frame.header.raw_length == BATCH
        if frame.header.codec == CodecId.NONE:  # did not shrink: sent raw, flagged
            assert frame.header.flags & protocol.FLAG_RAW_FALLBACK
            assert frame.payload == expected_batch(sequence)
            continue
        assert decompress(frame.payload) == expected_batch(sequence)


def test_only_acknowledged_frames_count_as_delivered(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, _ = start_stream()
    receiver = peer.accept()
    receiver.read_until(10)
    assert stream.counters.batches == 0
    receiver.ack(0)
    wait_for(lambda: stream.counters.batches == 1, "the first batch acknowledged")
    assert stream.counters.raw_bytes == BATCH
    # An acknowledgement cut in two by TCP counts once both halves are in.
    ack = protocol.ack_frame(3)
    receiver.sock.sendall(ack[:10])
    wait_for(lambda: stream._ack_filled == 10, "the first half read and kept")
    assert stream.counters.batches == 1
    receiver.sock.sendall(ack[10:])
    wait_for(lambda: stream.counters.batches == 4, "four batches acknowledged")
    assert stream.counters.raw_bytes == 4 * BATCH
    # An older acknowledgement changes nothing; a later one moves on from there.
    receiver.ack(1)
    receiver.ack(6)
    wait_for(lambda: stream.counters.batches == 7, "seven batches acknowledged")
    assert stream.counters.raw_bytes == 7 * BATCH
    # Several acknowledgements in one read: the highest counts.
    receiver.sock.sendall(protocol.ack_frame(8) + protocol.ack_frame(7))
    wait_for(lambda: stream.counters.batches == 9, "nine batches acknowledged")
    assert stream.counters.raw_bytes == 9 * BATCH


def test_the_window_is_bounded_and_moves_with_each_acknowledgement(
    peer: Peer,
    start_stream: Callable[..., tuple[OutgoingStream, CountingSource]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender, "WINDOW_FRAMES", 16)
    stream, source = start_stream()
    receiver = peer.accept()
    receiver.read_until(16)
    wait_for(lambda: blocked_on_a_full_window(stream), "the stream to wait on a full window")
    assert (stream.unacked, source.taken, len(receiver.frames)) == (16, 16, 16)
    receiver.ack(4)
    # Five frames left the window: exactly five more are produced, then it waits again.
    receiver.read_until(21)
    wait_for(lambda: blocked_on_a_full_window(stream), "the stream to wait again")
    assert (stream.unacked, source.taken, stream.counters.batches) == (16, 21, 5)
    assert [frame.header.sequence for frame in receiver.frames] == list(range(21))


def test_the_window_is_bounded_in_bytes_too(
    peer: Peer,
    start_stream: Callable[..., tuple[OutgoingStream, CountingSource]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender, "WINDOW_BYTES", 10 * 1024)
    stream, source = start_stream()
    receiver = peer.accept()
    wait_for(lambda: blocked_on_a_full_window(stream), "the stream to wait on a full window")
    frames = list(receiver.read_until(source.taken))
    sizes = [frame.header.payload_length for frame in frames]
    # Frames go out until they hold 10 KiB unacknowledged, and not one more.
    assert sum(sizes) >= 10 * 1024
    assert sum(sizes[:-1]) < 10 * 1024
    assert stream.unacked == len(frames)
    # Acknowledging frees their bytes: the stream fills the window once more.
    receiver.ack(frames[-1].header.sequence)
    wait_for(lambda: source.taken > len(frames), "more batches after the acknowledgement")
    wait_for(lambda: blocked_on_a_full_window(stream), "the window full again")
    more = receiver.read_until(source.taken)[len(frames) :]
    assert sum(frame.header.payload_length for frame in more) >= 10 * 1024
    assert sum(frame.header.payload_length for frame in more[:-1]) < 10 * 1024


def test_a_reconnect_replays_the_window_from_the_first_unacknowledged_frame(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, _ = start_stream()
    first = peer.accept()
    seen = first.read_until(12)
    first.ack(4)
    wait_for(lambda: stream.counters.batches == 5, "five batches acknowledged")
    first.sock.close()
    second = peer.accept()
    # The new connection says where it resumes, then the whole window comes again, in
    # order, counted as resent; then new batches follow.
    assert second.hello.resume_from == 5
    assert second.hello.session == first.hello.session
    replayed = wait_for(lambda: stream.counters.resent_batches, "the replay counted")
    frames = second.read_until(replayed + 3)
    sequences = [frame.header.sequence for frame in frames]
    assert sequences == list(range(5, 5 + len(frames)))
    # Everything the first connection saw beyond the acknowledgement was replayed.
    assert replayed >= len(seen) - 5
    decompress = zstandard.ZstdDecompressor().decompress
    assert decompress(frames[0].payload) == expected_batch(5)
    second.ack(sequences[-1])
    wait_for(lambda: stream.counters.batches == 5 + len(frames), "the replay acknowledged")
    assert stream.counters.resent_batches == replayed


def test_a_receiver_that_sends_data_breaks_the_protocol(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, _ = start_stream()
    first = peer.accept()
    first.read_until(3)
    first.sock.sendall(
        protocol.pack_header(
            FrameType.DATA, protocol.CodecId.NONE, sequence=0, raw_length=1, payload_length=1
        )
        + b"x"
    )
    # The stream drops the connection and comes back with everything still unacknowledged.
    second = peer.accept()
    assert second.hello.resume_from == 0
    assert stream.counters.batches == 0


def test_an_ack_for_a_sequence_never_sent_closes_the_stream_and_counts_nothing(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    """A forged ACK far ahead must not mark unsent (or sent but unverified) batches delivered."""
    stream, _ = start_stream()
    first = peer.accept()
    first.read_until(3)
    first.sock.sendall(protocol.ack_frame(10**9))
    # The stream drops the connection and replays from its first unacknowledged frame.
    second = peer.accept()
    assert second.hello.resume_from == 0
    assert stream.counters.batches == 0
    assert stream.counters.protocol_errors == 1


def test_a_peer_that_leaves_hands_its_unacknowledged_frames_on(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, source = start_stream()
    receiver = peer.accept()
    receiver.read_until(8)
    receiver.ack(2)
    wait_for(lambda: stream.counters.batches == 3, "three batches acknowledged")
    stream.abort()
    stream.join(10)
    in_window = stream.unacked
    frames = stream.take_unacked()
    # Every batch taken from the source and not acknowledged, in order, whole.
    assert in_window == source.taken - 3
    assert [frame.sequence for frame in frames] == list(range(3, source.taken))
    assert all(frame.raw_length == BATCH for frame in frames)
    assert [protocol.parse_header(frame.header).sequence for frame in frames[:2]] == [3, 4]
    assert len(frames[0].header) == HEADER_BYTES
    assert zstandard.ZstdDecompressor().decompress(frames[0].payload) == expected_batch(3)
    # Taken once: the window is empty afterwards.
    assert stream.unacked == 0
    assert stream.take_unacked() == []


def test_handed_over_frames_go_out_again_under_this_stream_s_sequences(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    """Frames a stream to a departed peer never got acknowledged are given to another
    stream: re-framed with its own sequences, same payload, counted as resent."""
    handed = []
    for old_sequence, size in ((70, 1000), (71, 3000)):
        batch = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        payload = zstandard.ZstdCompressor(write_checksum=True).compress(batch)
        header = protocol.pack_header(
            FrameType.DATA,
            protocol.CodecId.ZSTD,
            sequence=old_sequence,
            raw_length=size,
            payload_length=len(payload),
            crc32=old_sequence,
        )
        handed.append(sender.Unacked(old_sequence, header, payload, size))
    stream, source = start_stream()
    stream.handover.extend(handed)
    receiver = peer.accept()
    frames = receiver.read_until(6)
    by_payload = {frame.payload: frame for frame in frames}
    for old in handed:
        frame = by_payload[bytes(old.payload)]
        assert frame.header.raw_length == old.raw_length
        assert frame.header.payload_length == len(old.payload)
        assert frame.header.codec == protocol.CodecId.ZSTD
        assert frame.header.crc32 == old.sequence
    assert [frame.header.sequence for frame in frames] == list(range(len(frames)))
    assert stream.counters.resent_batches == 2
    receiver.ack(len(frames) - 1)
    wait_for(lambda: stream.counters.batches == len(frames), "all acknowledged")
    assert stream.counters.raw_bytes == 4000 + (len(frames) - 2) * BATCH
    assert source.taken >= len(frames) - 2


@pytest.mark.parametrize(
    ("sent", "left"),
    [(0, [b"abc", b"defg"]), (2, [b"c", b"defg"]), (3, [b"defg"]), (5, [b"fg"]), (7, [])],
)
def test_a_partial_sendmsg_resumes_at_the_first_unsent_byte(sent: int, left: list[bytes]) -> None:
    assert [bytes(buffer) for buffer in sender._drop_sent([b"abc", b"defg"], sent)] == left


def test_uncompressed_frames_carry_the_batch_and_its_crc32(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    start_stream(codec="none")
    receiver = peer.accept()
    for sequence, frame in enumerate(receiver.read_until(5)[:5]):
        assert frame.header.codec == protocol.CodecId.NONE
        assert frame.payload == expected_batch(sequence)
        assert frame.header.crc32 == zlib.crc32(frame.payload)


def test_verbose_mode_logs_each_batch(
    peer: Peer,
    start_stream: Callable[..., tuple[OutgoingStream, CountingSource]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="w5xde")
    start_stream()
    receiver = peer.accept()
    frames = receiver.read_until(3)
    wait_for(
        lambda: len([r for r in caplog.records if r.name == "w5xde.sender"]) >= 3,
        "three batch lines",
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "w5xde.sender"][:3]
    assert lines == [
        f"batch {n} to {peer.address}: {BATCH} -> {frames[n].header.payload_length} bytes"
        for n in range(3)
    ]


def _decode_stream(frames: list[protocol.Frame]) -> list[bytes]:
    """One connection's `stream` payloads, decoded in order by one zstd decoder."""
    decoder = zstandard.ZstdDecompressor().decompressobj()
    return [decoder.decompress(frame.payload) for frame in frames]


def test_stream_frames_share_one_history_and_decode_in_order(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    start_stream(context="stream")
    receiver = peer.accept(protocol.Context.STREAM)
    assert receiver.hello.version == protocol.VERSION
    assert receiver.hello.context == protocol.Context.STREAM
    frames = receiver.read_until(20)
    assert _decode_stream(frames) == [expected_batch(n) for n in range(len(frames))]
    # One zstd frame for the connection: only the first payload starts one; none of
    # the later ones decodes on its own.
    magic = b"\x28\xb5\x2f\xfd"
    assert frames[0].payload.startswith(magic)
    assert not any(frame.payload.startswith(magic) for frame in frames[1:])
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompressobj().decompress(frames[5].payload)
    # Without TLS each payload carries its CRC32 (no zstd checksum within a frame).
    assert all(frame.header.crc32 == zlib.crc32(frame.payload) for frame in frames)


def test_a_stream_reconnect_recompresses_the_window_into_the_new_context(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, _ = start_stream(context="stream")
    first = peer.accept(protocol.Context.STREAM)
    seen = first.read_until(12)
    first.ack(4)
    wait_for(lambda: stream.counters.batches == 5, "five batches acknowledged")
    first.sock.close()
    second = peer.accept(protocol.Context.STREAM)
    assert second.hello.resume_from == 5
    replayed = wait_for(lambda: stream.counters.resent_batches, "the replay counted")
    assert replayed >= len(seen) - 5
    frames = second.read_until(replayed + 3)
    assert [frame.header.sequence for frame in frames] == list(range(5, 5 + len(frames)))
    # The replay starts a fresh zstd frame: it decodes with a new decoder, and to the
    # same batches (the first connection's payloads would not: they need its history).
    assert _decode_stream(frames) == [expected_batch(5 + n) for n in range(len(frames))]
    assert frames[0].payload != seen[5].payload
    second.ack(frames[-1].header.sequence)
    wait_for(lambda: stream.counters.batches == 5 + len(frames), "the replay acknowledged")


def test_a_stream_window_keeps_raw_batches_and_a_new_stream_recompresses_them(
    peer: Peer, start_stream: Callable[..., tuple[OutgoingStream, CountingSource]]
) -> None:
    stream, _ = start_stream(context="stream")
    receiver = peer.accept(protocol.Context.STREAM)
    receiver.read_until(8)
    receiver.ack(2)
    wait_for(lambda: stream.counters.batches == 3, "three batches acknowledged")
    # The window holds views of the pool (nothing of its own), so the budget counts the
    # payloads sent, as under frame: less than the raw batches.
    assert 0 < stream.unacked_bytes < stream.unacked * BATCH
    stream.abort()
    stream.join(10)
    frames = stream.take_unacked()
    assert all(frame.raw for frame in frames)
    assert [bytes(frame.payload) for frame in frames[:3]] == [expected_batch(n) for n in (3, 4, 5)]
    receiver.sock.close()
    other, _ = start_stream(context="stream")
    other.handover.extend(frames[:3])
    taker = peer.accept(protocol.Context.STREAM)
    decoded = _decode_stream(taker.read_until(6))
    # Handed-over batches go first, in this connection's context and sequences.
    assert decoded[:3] == [expected_batch(n) for n in (3, 4, 5)]
    assert other.counters.resent_batches == 3


def test_a_file_source_s_window_keeps_places_and_a_replay_reads_the_file_again(
    peer: Peer,
    start_stream: Callable[..., tuple[OutgoingStream, CountingSource]],
    tmp_path: Path,
) -> None:
    data = bytes(POOL[: 64 * BATCH])
    (tmp_path / "data").write_bytes(data)
    stream, _ = start_stream(context="stream", source=FileSource(str(tmp_path), BATCH))
    first = peer.accept(protocol.Context.STREAM)
    first.read_until(12)
    first.ack(4)
    wait_for(lambda: stream.counters.batches == 5, "five batches acknowledged")
    # The window holds places in the file, nothing of its own: the budget counts the
    # payloads sent (compressed, well under a raw batch each), not copies of the batches.
    assert 0 < stream.unacked_bytes < stream.unacked * BATCH * 0.8
    first.sock.close()
    second = peer.accept(protocol.Context.STREAM)
    assert second.hello.resume_from == 5
    frames = second.read_until(10)[:10]
    assert [frame.header.sequence for frame in frames] == list(range(5, 15))
    decoded = _decode_stream(frames)
    assert decoded == [data[n * BATCH : (n + 1) * BATCH] for n in range(5, 15)]
    second.ack(14)
    wait_for(lambda: stream.counters.batches == 15, "the replay acknowledged")
    stream.abort()
    stream.join(10)
    assert all(isinstance(frame.payload, FileBatch) for frame in stream.take_unacked())


def test_a_file_changed_under_the_window_ends_the_stream_with_the_field_named(
    peer: Peer,
    start_stream: Callable[..., tuple[OutgoingStream, CountingSource]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(POOL[: 64 * BATCH]))
    stream, _ = start_stream(context="stream", source=FileSource(str(path), BATCH))
    first = peer.accept(protocol.Context.STREAM)
    first.read_until(6)
    wait_for(lambda: stream.unacked >= 6, "six batches waiting for their acknowledgement")
    # Replaced as a deploy would (a new file renamed over it): the stream's open handle
    # still reads the old one, so only the replay can notice.
    (tmp_path / "new").write_bytes(b"rewritten" * 1000)
    os.replace(tmp_path / "new", path)
    with caplog.at_level(logging.ERROR, logger="w5xde.sender"):
        first.sock.close()
        second = peer.accept(protocol.Context.STREAM)
        # The replay cannot send the batches as they were: the stream ends, saying why
        # (the worker then reports it broken), rather than replaying other bytes.
        stream.join(15)
        second.sock.close()
    assert not stream.is_alive()
    assert any(
        "workload.path" in record.getMessage() and "changed" in record.getMessage()
        for record in caplog.records
    )
