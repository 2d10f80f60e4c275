"""Wire protocol v3: the handshake messages and the framing (see docs/protocol.md).

Pure encoding and decoding with hard bounds, no sockets: the stream code feeds
bytes in and gets frames or a `ProtocolError` out, which is what the fuzz tests pin.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"W5XD"
#: 2: runs inside mutual TLS (unless turned off), the receiver takes the sender's name
#: from its certificate, and ACKs for unsent sequences or frames beyond the replay
#: window close the connection.  The framing is that of 1.
#: 3: the Hello carries the compression context; under `stream` a connection's zstd
#: frames share one compressor's history (docs/protocol.md, "Stream context").  A
#: sender configured `frame` still introduces itself as 2, so v2 peers keep working.
VERSION = 3
#: The version of a Hello without the context byte (it means `frame`).
FRAME_ONLY_VERSION = 2
VERSIONS = frozenset((FRAME_ONLY_VERSION, VERSION))
#: Under `stream` the compressor's window is at most 2**STREAM_WINDOW_LOG bytes (128 KiB),
#: which bounds what a receiver keeps per connection; a larger window is refused.
#: Measured: 128 KiB keeps 95-99 % of a 1 MiB window's ratio gain (docs/decisions.md).
STREAM_WINDOW_LOG = 17

#: A batch is at most 64 MiB (the API bound); a frame may add zstd's worst-case growth.
MAX_RAW_BYTES = 64 * 1024 * 1024
MAX_PAYLOAD_BYTES = MAX_RAW_BYTES + (MAX_RAW_BYTES >> 7) + 64 * 1024  # payload_bound()
MAX_NAME_BYTES = 253
#: A receiver accepts a sequence at most this far ahead of the next one it expects: the
#: most frames a sender's replay window can hold (`sender.BUDGET_FRAMES`).  A frame
#: beyond it is no gap a sender could leave, so it closes the connection.
REPLAY_WINDOW_FRAMES = 16384
NONCE_BYTES = 16
PROOF_BYTES = 32


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed with this reason logged."""


def payload_bound(raw_bytes: int) -> int:
    """The largest payload a batch of `raw_bytes` may need (zstd's worst-case growth)."""
    return raw_bytes + (raw_bytes >> 7) + 64 * 1024


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """One cluster's bounds on a DATA frame: its `batchBytes`, not the protocol's 64 MiB.

    A receiver holds at most one frame per connection, so these bound its memory per
    connection and what a frame may decompress to.
    """

    max_raw: int = MAX_RAW_BYTES

    @property
    def max_payload(self) -> int:
        return payload_bound(self.max_raw)

    def check(self, header: FrameHeader) -> None:
        if header.raw_length > self.max_raw:
            raise ProtocolError(
                f"raw length {header.raw_length} exceeds this cluster's batchBytes {self.max_raw}"
            )
        if header.payload_length > self.max_payload:
            raise ProtocolError(
                f"payload length {header.payload_length} exceeds {self.max_payload} "
                f"for batchBytes {self.max_raw}"
            )


class FrameType(IntEnum):
    DATA = 1
    ACK = 2
    CLOSE = 3


class CodecId(IntEnum):
    NONE = 0
    ZSTD = 1


#: DATA flag: the sender compressed this batch, it did not shrink, so it goes raw (codec none).
FLAG_RAW_FALLBACK = 0x0001
#: DATA flag: the sender balances by capacity and asks for credit in the receiver's ACKs.
FLAG_WANTS_CREDIT = 0x0002
#: ACK flag: `raw length` carries the receiver's credit, the DATA payload bytes the sender
#: may have unacknowledged beyond this ACK (docs/protocol.md, "Credits").
FLAG_CREDIT = 0x0001
_DATA_FLAGS = FLAG_RAW_FALLBACK | FLAG_WANTS_CREDIT
_ACK_FLAGS = FLAG_CREDIT

#: type, codec, flags, sequence, raw length, payload length, CRC32 (codec none only).
HEADER = struct.Struct("<BBHQIII")
HEADER_BYTES = HEADER.size


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """One decoded frame header, already checked against the bounds."""

    kind: FrameType
    codec: CodecId
    flags: int
    sequence: int
    raw_length: int
    payload_length: int
    crc32: int


def pack_header(
    kind: FrameType,
    codec: CodecId,
    *,
    sequence: int,
    raw_length: int,
    payload_length: int,
    crc32: int = 0,
    flags: int = 0,
) -> bytes:
    """The 24-byte header that precedes every frame."""
    return HEADER.pack(kind, codec, flags, sequence, raw_length, payload_length, crc32)


def ack_frame(sequence: int, credit: int = -1) -> bytes:
    """An acknowledgement: every DATA frame up to `sequence` is delivered and verified.

    With `credit` >= 0 it also grants the sender that many unacknowledged payload bytes.
    """
    if credit >= 0:
        return HEADER.pack(
            FrameType.ACK, CodecId.NONE, FLAG_CREDIT, sequence, min(credit, MAX_RAW_BYTES), 0, 0
        )
    return HEADER.pack(FrameType.ACK, CodecId.NONE, 0, sequence, 0, 0, 0)


def close_frame() -> bytes:
    """Tells the peer the stream ends on purpose, so it does not wait for a reconnect."""
    return HEADER.pack(FrameType.CLOSE, CodecId.NONE, 0, 0, 0, 0, 0)


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """Decode and bound-check one header; any violation is a ProtocolError."""
    kind, codec, flags, sequence, raw_length, payload_length, crc = HEADER.unpack_from(data, offset)
    if kind not in _FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {kind}")
    if codec not in _CODECS:
        raise ProtocolError(f"unknown codec {codec}")
    if flags:  # rare: one test on the hot path when no flag is set
        _check_flags(kind, codec, flags)
    if kind == FrameType.ACK and flags & FLAG_CREDIT:
        if payload_length:
            raise ProtocolError("ACK frame carries a payload")
        if raw_length > MAX_RAW_BYTES:
            raise ProtocolError(f"credit {raw_length} exceeds {MAX_RAW_BYTES}")
    elif kind != FrameType.DATA:
        if raw_length or payload_length:
            raise ProtocolError(f"{FrameType(kind).name} frame carries a payload")
    else:
        if raw_length > MAX_RAW_BYTES:
            raise ProtocolError(f"raw length {raw_length} exceeds {MAX_RAW_BYTES}")
        if payload_length > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"payload length {payload_length} exceeds {MAX_PAYLOAD_BYTES}")
        if codec == CodecId.NONE and raw_length != payload_length:
            raise ProtocolError("uncompressed frame with raw length != payload length")
        if codec == CodecId.ZSTD and payload_length == 0:
            raise ProtocolError("zstd frame without payload")
    return FrameHeader(
        FrameType(kind), CodecId(codec), flags, sequence, raw_length, payload_length, crc
    )


def _check_flags(kind: int, codec: int, flags: int) -> None:
    allowed = _DATA_FLAGS if kind == FrameType.DATA else _ACK_FLAGS if kind == FrameType.ACK else 0
    if flags & ~allowed:
        raise ProtocolError(f"reserved flags set: {flags:#x}")
    if flags & FLAG_RAW_FALLBACK and kind == FrameType.DATA and codec != CodecId.NONE:
        raise ProtocolError("raw-fallback flag on a compressed frame")


_FRAME_TYPES = frozenset(int(kind) for kind in FrameType)
_CODECS = frozenset(int(codec) for codec in CodecId)


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame as the decoder hands it out (payload copied out of the buffer)."""

    header: FrameHeader
    payload: bytes


class FrameDecoder:
    """Turns an arbitrary byte stream into frames, buffering at most one frame.

    Used by tests and by anything that is not the receive hot path (which parses in
    place in its reused buffer with `parse_header`).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Frames completed by `data`; after one ProtocolError every call raises it again."""
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        frames: list[Frame] = []
        position = 0
        try:
            while len(self._buffer) - position >= HEADER_BYTES:
                header = parse_header(self._buffer, position)
                if header.payload_length > self._max_payload:
                    raise ProtocolError(
                        f"payload length {header.payload_length} exceeds {self._max_payload}"
                    )
                end = position + HEADER_BYTES + header.payload_length
                if end > len(self._buffer):
                    break
                payload = bytes(self._buffer[position + HEADER_BYTES : end])
                frames.append(Frame(header, payload))
                position = end
        except ProtocolError as error:
            self._failed = error
            self._buffer = bytearray()
            raise
        del self._buffer[:position]
        return frames


# --- handshake ---------------------------------------------------------------

#: magic, version, stream index, session id, first unacknowledged sequence, nonce, then
#: the length-prefixed cluster id and sender name.
_HELLO = struct.Struct("<4sHHQQ16s")
HELLO_FIXED_BYTES = _HELLO.size
#: magic, version, status, nonce.
_WELCOME = struct.Struct("<4sHH16s")
WELCOME_BYTES = _WELCOME.size


class HandshakeStatus(IntEnum):
    OK = 0
    WRONG_VERSION = 1
    WRONG_CLUSTER = 2
    #: The Hello names another sender than the TLS certificate does.
    WRONG_IDENTITY = 3
    #: The sender's `compression.context` is not the receiver's (v3).
    WRONG_CONTEXT = 4


class Context(IntEnum):
    """`compression.context` on the wire (the last byte of a v3 Hello)."""

    FRAME = 0
    STREAM = 1

    @property
    def field(self) -> str:
        """The API value, as a refusal names it."""
        return self.name.lower()


def hello_version(context: Context) -> int:
    """The version a sender introduces itself with: 2 for `frame`, so v2 peers accept it."""
    return VERSION if context == Context.STREAM else FRAME_ONLY_VERSION


@dataclass(frozen=True, slots=True)
class Hello:
    """The connecting side's introduction: who it is and which of its streams this is."""

    cluster_id: str
    sender: str
    stream: int
    session: int
    nonce: bytes
    resume_from: int = 0
    version: int = VERSION
    #: v3 only (a v2 Hello means FRAME).
    context: Context = Context.STREAM

    def encode(self) -> bytes:
        if len(self.nonce) != NONCE_BYTES:
            raise ProtocolError(f"nonce must be {NONCE_BYTES} bytes")
        cluster = self.cluster_id.encode()
        sender = self.sender.encode()
        if len(cluster) > MAX_NAME_BYTES or len(sender) > MAX_NAME_BYTES:
            raise ProtocolError("cluster id or sender name longer than 253 bytes")
        return b"".join(
            (
                _HELLO.pack(
                    MAGIC, self.version, self.stream, self.session, self.resume_from, self.nonce
                ),
                bytes((len(cluster),)),
                cluster,
                bytes((len(sender),)),
                sender,
                bytes((self.context,)) if self.version >= VERSION else b"",
            )
        )


def hello_tail_bytes(version: int) -> int:
    """Bytes a Hello of `version` carries after the sender name (v3: the context)."""
    return 1 if version >= VERSION else 0


def decode_hello(data: bytes) -> Hello:
    """Parse a complete Hello (its length from `hello_length`)."""
    if len(data) < _HELLO.size + 2:
        raise ProtocolError("hello too short")
    magic, version, stream, session, resume_from, nonce = _HELLO.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("bad magic: not a w5xde peer")
    position = _HELLO.size
    cluster_length = data[position]
    cluster = data[position + 1 : position + 1 + cluster_length]
    position += 1 + cluster_length
    if position >= len(data):
        raise ProtocolError("hello truncated")
    sender_length = data[position]
    sender = data[position + 1 : position + 1 + sender_length]
    end = position + 1 + sender_length
    tail = hello_tail_bytes(version)
    if len(sender) != sender_length or end + tail != len(data):
        raise ProtocolError("hello length fields do not match its size")
    context = Context.FRAME
    if tail:
        if data[end] not in _CONTEXTS:
            raise ProtocolError(f"unknown compression context {data[end]}")
        context = Context(data[end])
    try:
        return Hello(
            cluster.decode(), sender.decode(), stream, session, nonce, resume_from, version, context
        )
    except UnicodeDecodeError:
        raise ProtocolError("hello names are not UTF-8") from None


_CONTEXTS = frozenset(int(context) for context in Context)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The accepting side's answer: its nonce, or why it refuses."""

    status: HandshakeStatus
    nonce: bytes
    version: int = VERSION

    def encode(self) -> bytes:
        return _WELCOME.pack(MAGIC, self.version, self.status, self.nonce)


def decode_welcome(data: bytes) -> Welcome:
    if len(data) != WELCOME_BYTES:
        raise ProtocolError("welcome has the wrong size")
    magic, version, status, nonce = _WELCOME.unpack(data)
    if magic != MAGIC:
        raise ProtocolError("bad magic: not a w5xde peer")
    if status not in {int(item) for item in HandshakeStatus}:
        raise ProtocolError(f"unknown handshake status {status}")
    return Welcome(HandshakeStatus(status), nonce, version)


def proof(key: bytes, role: bytes, hello: bytes, welcome: bytes) -> bytes:
    """HMAC-SHA256 over both nonces and identities; `role` keeps the two proofs distinct."""
    return hmac.new(key, b"w5xde/1 " + role + b"\0" + hello + welcome, hashlib.sha256).digest()


CLIENT_ROLE = b"client"
SERVER_ROLE = b"server"


def verify_proof(expected: bytes, received: bytes) -> None:
    if not hmac.compare_digest(expected, received):
        raise ProtocolError("handshake proof does not match: peer does not hold the cluster key")
