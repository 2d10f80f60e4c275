"""Wire protocol v1 framing: round trips, bounds, and a fuzzed decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w5xde.worker import protocol
from w5xde.worker.protocol import (
    HEADER,
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_RAW_BYTES,
    CodecId,
    FrameDecoder,
    FrameType,
    ProtocolError,
)


def data_frame(sequence: int, payload: bytes, codec: CodecId = CodecId.NONE) -> bytes:
    raw = len(payload) if codec == CodecId.NONE else len(payload) * 2
    return (
        protocol.pack_header(
            FrameType.DATA, codec, sequence=sequence, raw_length=raw, payload_length=len(payload)
        )
        + payload
    )


def test_header_is_24_bytes_and_round_trips() -> None:
    encoded = protocol.pack_header(
        FrameType.DATA,
        CodecId.ZSTD,
        sequence=2**40 + 3,
        raw_length=70000,
        payload_length=1234,
        crc32=0xDEADBEEF,
    )
    assert len(encoded) == HEADER_BYTES == 24
    header = protocol.parse_header(encoded)
    assert header.kind == FrameType.DATA
    assert header.codec == CodecId.ZSTD
    assert header.sequence == 2**40 + 3
    assert (header.raw_length, header.payload_length, header.crc32) == (70000, 1234, 0xDEADBEEF)


def test_decoder_reassembles_frames_split_at_every_byte() -> None:
    stream = (
        data_frame(0, b"abc")
        + protocol.ack_frame(7)
        + data_frame(1, b"")
        + data_frame(2, b"x" * 1000)
    )
    decoder = FrameDecoder()
    frames = []
    for position in range(len(stream)):
        frames += decoder.feed(stream[position : position + 1])
    assert [(f.header.kind, f.header.sequence, f.payload) for f in frames] == [
        (FrameType.DATA, 0, b"abc"),
        (FrameType.ACK, 7, b""),
        (FrameType.DATA, 1, b""),
        (FrameType.DATA, 2, b"x" * 1000),
    ]
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((9, 0, 0, 0, 0, 0, 0), "unknown frame type"),
        ((1, 7, 0, 0, 0, 0, 0), "unknown codec"),
        ((1, 0, 1, 0, 0, 0, 0), "reserved flags"),
        ((1, 1, 0, 0, MAX_RAW_BYTES + 1, 10, 0), "raw length"),
        ((1, 1, 0, 0, 10, MAX_PAYLOAD_BYTES + 1, 0), "payload length"),
        ((1, 0, 0, 0, 10, 11, 0), "raw length != payload length"),
        ((1, 1, 0, 0, 10, 0, 0), "without payload"),
        ((2, 0, 0, 5, 0, 3, 0), "carries a payload"),
    ],
)
def test_headers_outside_the_bounds_are_refused(fields: tuple[int, ...], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        protocol.parse_header(HEADER.pack(*fields))


def test_a_decoder_limit_refuses_big_frames_before_buffering_them() -> None:
    decoder = FrameDecoder(max_payload=1024)
    with pytest.raises(ProtocolError, match="exceeds 1024"):
        decoder.feed(data_frame(0, b"y" * 2048)[:HEADER_BYTES])
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.integers(min_value=1, max_value=97))
def test_any_byte_stream_ends_in_frames_or_a_protocol_error(data: bytes, step: int) -> None:
    decoder = FrameDecoder(max_payload=64 * 1024)
    try:
        for position in range(0, len(data), step):
            for frame in decoder.feed(data[position : position + step]):
                assert len(frame.payload) == frame.header.payload_length
            # Never more than one incomplete frame is held.
            assert decoder.buffered < HEADER_BYTES + 64 * 1024
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63), st.binary(max_size=300)), max_size=20))
def test_valid_frames_survive_any_chunking(frames: list[tuple[int, bytes]]) -> None:
    stream = b"".join(data_frame(sequence, payload) for sequence, payload in frames)
    decoder = FrameDecoder()
    out = []
    for position in range(0, len(stream), 13):
        out += decoder.feed(stream[position : position + 13])
    assert [(f.header.sequence, f.payload) for f in out] == frames


def _valid_hello() -> bytes:
    return protocol.Hello("cluster-a", "sender-1", 2, 7, b"n" * 16, 5).encode()


def _valid_welcome() -> bytes:
    return protocol.Welcome(protocol.HandshakeStatus.OK, b"m" * 16).encode()


def _damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid message with a byte changed, a piece cut off or bytes added."""
    return st.one_of(
        st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
            lambda change: valid[: change[0]] + bytes((change[1],)) + valid[change[0] + 1 :]
        ),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),
        st.binary(min_size=1, max_size=8).map(lambda extra: valid + extra),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        _damaged(_valid_hello()),
        _damaged(_valid_welcome()),
    )
)
def test_any_hello_or_welcome_bytes_decode_or_raise_a_protocol_error(data: bytes) -> None:
    """Whatever is accepted is exactly what was sent: encoding the decoded message gives
    the same bytes back (no field ignored, nothing past the end tolerated)."""
    try:
        hello = protocol.decode_hello(data)
    except ProtocolError:
        pass
    else:
        assert hello.encode() == data
        assert data[:4] == protocol.MAGIC
    try:
        welcome = protocol.decode_welcome(data)
    except ProtocolError:
        pass
    else:
        assert welcome.encode() == data
        assert data[:4] == protocol.MAGIC


def test_damaged_hellos_are_refused_with_a_reason() -> None:
    valid = _valid_hello()
    assert protocol.decode_hello(valid) == protocol.Hello(
        "cluster-a", "sender-1", 2, 7, b"n" * 16, 5
    )
    with pytest.raises(ProtocolError, match="magic"):
        protocol.decode_hello(b"HTTP" + valid[4:])
    with pytest.raises(ProtocolError, match="length fields"):
        protocol.decode_hello(valid + b"x")
    with pytest.raises(ProtocolError, match="length fields"):
        protocol.decode_hello(valid[:-1])
    with pytest.raises(ProtocolError, match="too short"):
        protocol.decode_hello(valid[: protocol.HELLO_FIXED_BYTES + 1])
    with pytest.raises(ProtocolError, match="UTF-8"):
        protocol.decode_hello(valid[:-1] + b"\xff")
    welcome = _valid_welcome()
    with pytest.raises(ProtocolError, match="wrong size"):
        protocol.decode_welcome(welcome + b"x")
    with pytest.raises(ProtocolError, match="status"):
        protocol.decode_welcome(welcome[:6] + b"\x09\x00" + welcome[8:])


@given(
    st.text(min_size=1, max_size=60),
    st.text(min_size=1, max_size=60),
    st.integers(0, 65535),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
def test_hello_round_trips(
    cluster: str, sender: str, stream: int, session: int, resume: int
) -> None:
    hello = protocol.Hello(cluster, sender, stream, session, b"n" * 16, resume)
    assert protocol.decode_hello(hello.encode()) == hello
