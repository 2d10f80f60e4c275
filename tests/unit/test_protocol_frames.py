"""Wire protocol v1 framing: round trips, bounds, and a fuzzed decoder."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

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
        ((1, 0, 4, 0, 0, 0, 0), "reserved flags"),
        ((2, 0, 2, 0, 0, 0, 0), "reserved flags"),
        ((3, 0, 1, 0, 0, 0, 0), "reserved flags"),
        ((1, 1, 1, 0, 10, 5, 0), "raw-fallback flag on a compressed frame"),
        ((2, 0, 1, 0, MAX_RAW_BYTES + 1, 0, 0), "credit"),
        ((2, 0, 1, 0, 10, 3, 0), "carries a payload"),
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
        protocol.decode_hello(valid[:-2] + b"\xff" + valid[-1:])
    with pytest.raises(ProtocolError, match="compression context"):
        protocol.decode_hello(valid[:-1] + b"\x07")
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


def test_acks_closes_and_default_crcs_are_all_zero_fields_but_their_own() -> None:
    assert protocol.ack_frame(9) == HEADER.pack(FrameType.ACK, CodecId.NONE, 0, 9, 0, 0, 0)
    assert protocol.close_frame() == HEADER.pack(FrameType.CLOSE, CodecId.NONE, 0, 0, 0, 0, 0)
    header = protocol.parse_header(
        protocol.pack_header(
            FrameType.DATA, CodecId.ZSTD, sequence=1, raw_length=10, payload_length=5
        )
    )
    assert (header.flags, header.crc32) == (0, 0)


def test_headers_are_parsed_at_their_offset() -> None:
    stream = data_frame(3, b"abc") + data_frame(4, b"defg")
    second = protocol.parse_header(stream, HEADER_BYTES + 3)
    assert (second.sequence, second.payload_length) == (4, 4)


def test_the_largest_frames_allowed_are_accepted() -> None:
    header = protocol.parse_header(
        HEADER.pack(FrameType.DATA, CodecId.ZSTD, 0, 1, MAX_RAW_BYTES, MAX_PAYLOAD_BYTES, 0)
    )
    assert (header.raw_length, header.payload_length) == (MAX_RAW_BYTES, MAX_PAYLOAD_BYTES)
    decoder = FrameDecoder(max_payload=1024)
    (frame,) = decoder.feed(data_frame(0, b"y" * 1024))
    assert frame.payload == b"y" * 1024


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((9, 0, 0, 0, 0, 0, 0), "unknown frame type 9"),
        ((1, 7, 0, 0, 0, 0, 0), "unknown codec 7"),
        ((1, 0, 4, 0, 0, 0, 0), "reserved flags set: 0x4"),
        (
            (1, 1, 0, 0, MAX_RAW_BYTES + 1, 10, 0),
            f"raw length {MAX_RAW_BYTES + 1} exceeds {MAX_RAW_BYTES}",
        ),
        (
            (1, 1, 0, 0, 10, MAX_PAYLOAD_BYTES + 1, 0),
            f"payload length {MAX_PAYLOAD_BYTES + 1} exceeds {MAX_PAYLOAD_BYTES}",
        ),
        ((1, 0, 0, 0, 10, 11, 0), "uncompressed frame with raw length != payload length"),
        ((1, 1, 0, 0, 10, 0, 0), "zstd frame without payload"),
        ((2, 0, 0, 5, 0, 3, 0), "ACK frame carries a payload"),
        ((3, 0, 0, 0, 4, 0, 0), "CLOSE frame carries a payload"),
    ],
)
def test_each_refusal_gives_its_reason(fields: tuple[int, ...], reason: str) -> None:
    """The reason is what the receiver logs when it closes the connection."""
    with pytest.raises(ProtocolError) as refused:
        protocol.parse_header(HEADER.pack(*fields))
    assert str(refused.value) == reason


def test_a_failed_decoder_holds_nothing_and_keeps_failing() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="unknown frame type"):
        decoder.feed(data_frame(0, b"ok") + b"\xff" * HEADER_BYTES)
    assert decoder.buffered == 0
    with pytest.raises(ProtocolError, match="unknown frame type"):
        decoder.feed(data_frame(1, b"fine"))


def test_hello_names_up_to_253_bytes() -> None:
    longest = "a" * protocol.MAX_NAME_BYTES
    for cluster, sender in ((longest, "s"), ("c", longest)):
        hello = protocol.Hello(cluster, sender, 0, 0, b"n" * 16)
        assert protocol.decode_hello(hello.encode()) == hello
    for cluster, sender in ((longest + "a", "s"), ("c", longest + "a")):
        with pytest.raises(ProtocolError) as refused:
            protocol.Hello(cluster, sender, 0, 0, b"n" * 16).encode()
        assert str(refused.value) == "cluster id or sender name longer than 253 bytes"
    with pytest.raises(ProtocolError) as refused:
        protocol.Hello("c", "s", 0, 0, b"short").encode()
    assert str(refused.value) == "nonce must be 16 bytes"


def test_a_hello_with_empty_names_is_the_shortest() -> None:
    # v3 ends with the compression context; a v2 Hello (frame) has none.
    assert len(protocol.Hello("", "", 1, 2, b"n" * 16).encode()) == protocol.HELLO_FIXED_BYTES + 3
    hello = protocol.Hello("", "", 1, 2, b"n" * 16, version=2, context=protocol.Context.FRAME)
    encoded = hello.encode()
    assert len(encoded) == protocol.HELLO_FIXED_BYTES + 2
    assert protocol.decode_hello(encoded) == hello
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_hello(encoded[:-1])
    assert str(refused.value) == "hello too short"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda valid: b"HTTP" + valid[4:], "bad magic: not a w5xde peer"),
        (lambda valid: valid + b"x", "hello length fields do not match its size"),
        (lambda valid: valid[:-1], "hello length fields do not match its size"),
        (lambda valid: valid[:-2] + b"\xff" + valid[-1:], "hello names are not UTF-8"),
        (lambda valid: valid[:-1] + b"\x02", "unknown compression context 2"),
        # A cluster length that runs past the end leaves no byte for the sender's length.
        (
            lambda valid: valid[: protocol.HELLO_FIXED_BYTES] + b"\xff" + b"x" * 20,
            "hello truncated",
        ),
    ],
)
def test_each_bad_hello_gives_its_reason(damage: Callable[[bytes], bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_hello(damage(_valid_hello()))
    assert str(refused.value) == reason


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda valid: valid + b"x", "welcome has the wrong size"),
        (lambda valid: b"HTTP" + valid[4:], "bad magic: not a w5xde peer"),
        (lambda valid: valid[:6] + b"\x09\x00" + valid[8:], "unknown handshake status 9"),
    ],
)
def test_each_bad_welcome_gives_its_reason(damage: Callable[[bytes], bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_welcome(damage(_valid_welcome()))
    assert str(refused.value) == reason


def test_proofs_bind_key_role_and_both_messages() -> None:
    hello, welcome = _valid_hello(), _valid_welcome()
    proof = protocol.proof(b"k" * 32, protocol.CLIENT_ROLE, hello, welcome)
    assert len(proof) == protocol.PROOF_BYTES
    assert (
        proof == hmac.new(b"k" * 32, b"w5xde/1 client\0" + hello + welcome, hashlib.sha256).digest()
    )
    others = {
        protocol.proof(b"x" * 32, protocol.CLIENT_ROLE, hello, welcome),
        protocol.proof(b"k" * 32, protocol.SERVER_ROLE, hello, welcome),
        protocol.proof(b"k" * 32, protocol.CLIENT_ROLE, hello[:-1] + b"x", welcome),
        protocol.proof(b"k" * 32, protocol.CLIENT_ROLE, hello, welcome[:-1] + b"x"),
    }
    assert proof not in others
    assert len(others) == 4
    protocol.verify_proof(proof, proof)
    with pytest.raises(ProtocolError) as refused:
        protocol.verify_proof(proof, proof[:-1] + bytes((proof[-1] ^ 1,)))
    assert str(refused.value) == (
        "handshake proof does not match: peer does not hold the cluster key"
    )


def test_flags_raw_fallback_and_credit_round_trip() -> None:
    """The only flags v1 knows: raw fallback and credit request on DATA, credit on ACK."""
    header = protocol.parse_header(
        protocol.pack_header(
            FrameType.DATA,
            CodecId.NONE,
            sequence=3,
            raw_length=5,
            payload_length=5,
            crc32=9,
            flags=protocol.FLAG_RAW_FALLBACK | protocol.FLAG_WANTS_CREDIT,
        )
    )
    assert header.flags == protocol.FLAG_RAW_FALLBACK | protocol.FLAG_WANTS_CREDIT
    ack = protocol.parse_header(protocol.ack_frame(41, credit=4 << 20))
    assert (ack.kind, ack.sequence, ack.flags, ack.raw_length) == (
        FrameType.ACK,
        41,
        protocol.FLAG_CREDIT,
        4 << 20,
    )
    # Without a credit an ACK is exactly the v1 ACK.
    assert protocol.ack_frame(41) == HEADER.pack(FrameType.ACK, CodecId.NONE, 0, 41, 0, 0, 0)
    # A credit is bounded like a batch.
    assert protocol.parse_header(protocol.ack_frame(1, credit=1 << 40)).raw_length == MAX_RAW_BYTES
