"""Batch compression and verified decompression (zstd with content checksums, or none+CRC32).

One `BatchCompressor`/`BatchDecompressor` per stream thread: zstandard contexts are
not thread-safe, and reusing a context avoids re-allocating its tables per batch.

Under `compression.context: stream` (docs/protocol.md, "Stream context") a compressor
keeps one zstd frame open per connection and flushes a block per batch, so each batch
may refer back to the ones before it; `StreamDecompressor` decodes one connection's
payloads in order.  Its payloads carry no zstd checksum (that comes only at a frame's
end): without TLS the header's CRC32 covers each payload, with TLS the record MAC does.
"""

from __future__ import annotations

import os
import zlib

import zstandard

from w5xde.api.v1alpha1 import Codec, CompressionContext, CompressionSpec
from w5xde.worker.protocol import (
    FLAG_RAW_FALLBACK,
    MAX_RAW_BYTES,
    STREAM_WINDOW_LOG,
    CodecId,
    Context,
    ProtocolError,
)

#: The level value that means "send raw" (zstd's own level 0 means its default, 3).
RAW_LEVEL = 0


class CorruptBatchError(Exception):
    """A frame whose payload fails verification: counted as corrupt, the stream is dropped."""


class StreamContextError(ProtocolError):
    """A payload that does not decode in its connection's stream context: a protocol error."""


def wire_context(spec: CompressionSpec) -> Context:
    """`compression.context` as the Hello carries it."""
    return Context.STREAM if spec.context == CompressionContext.STREAM else Context.FRAME


#: Under `stream`, the hash and chain tables hold at most 2**STREAM_TABLE_LOG entries.
STREAM_TABLE_LOG = STREAM_WINDOW_LOG - 1


def stream_parameters(level: int, *, threads: int = 0) -> zstandard.ZstdCompressionParameters:
    """A `stream` connection's zstd parameters at `level`: the protocol's 128 KiB window
    and match tables sized for it.

    A stream never tells zstd how much will come, so zstd sizes its tables for the
    level as if for large inputs: 2**21 hash and 2**20 chain entries at level 9 (11 MB
    per context), 41 MB at level 12, to search a window of 2**17 bytes.  `level: auto`
    probes 9 and 12 in every stream, so a worker held about 118 MB instead of 60.
    Capped at 2**16 entries (1.2 MB up to level 12, 2.2 MB at 19 and up), measured on
    the mixed pool (64 KiB batches, one block flushed per batch): ratio -0.05 % at
    level 3, -0.2 % at 6, -0.3 % at 9, -0.6 % at 12; speed +0 %, +18 %, +17 %, +126 %
    (the tables fit the caches).
    """
    defaults = zstandard.ZstdCompressionParameters.from_level(level, window_log=STREAM_WINDOW_LOG)
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=STREAM_WINDOW_LOG,
        hash_log=min(defaults.hash_log, STREAM_TABLE_LOG),
        chain_log=min(defaults.chain_log, STREAM_TABLE_LOG),
        write_checksum=0,
        write_content_size=0,
        threads=threads,
    )


def zstd_threads(threads: int) -> int:
    """The API's `threads` (1 = in the caller, 0 = one per CPU) in zstandard's terms."""
    if threads == 0:
        return os.cpu_count() or 1
    return 0 if threads == 1 else threads


class BatchCompressor:
    """Compresses one batch at a time into a self-verifying payload.

    `level` may change between batches (`level: auto`); one zstd context is kept per
    level used, so a switch costs no allocation after the first time.
    """

    def __init__(self, spec: CompressionSpec, *, stream: bool = False) -> None:
        self.codec_id = CodecId.ZSTD if spec.codec == Codec.ZSTD else CodecId.NONE
        #: `context: stream` (the producer asks for it): one zstd frame per connection,
        #: a block flushed per batch; otherwise every batch is a zstd frame of its own.
        self.stream = stream
        #: Stream payloads carry a CRC32 only when no TLS record MAC covers them.
        self.checksum_payloads = True
        self._threads = zstd_threads(spec.threads)
        self._contexts: dict[int, zstandard.ZstdCompressor] = {}
        self._zstd: zstandard.ZstdCompressor | None = None
        #: The open frame of the connection (stream), and the end of a frame a level
        #: change closed, which goes in front of the next payload.
        self._frame: zstandard.ZstdCompressionObj | None = None
        self._finished = b""
        self.level = RAW_LEVEL
        if self.codec_id == CodecId.ZSTD:
            self.set_level(spec.fixed_level)

    def set_level(self, level: int) -> None:
        """Compress the next batches at `level` (RAW_LEVEL: send them raw).

        Under stream the open frame ends (its history is lost once) and the next batch
        starts a frame at the new level.
        """
        if self.codec_id != CodecId.ZSTD or level == self.level:
            return
        self.level = level
        if self._frame is not None:
            self._finished += self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
            self._frame = None
        if level == RAW_LEVEL:
            self._zstd = None
            return
        context = self._contexts.get(level)
        if context is None:
            if self.stream:
                params = stream_parameters(level, threads=self._threads)
                context = zstandard.ZstdCompressor(compression_params=params)
            else:
                context = zstandard.ZstdCompressor(
                    level=level, write_checksum=True, write_content_size=True, threads=self._threads
                )
            self._contexts[level] = context
        self._zstd = context

    def new_connection(self, *, tls: bool) -> None:
        """Stream: the next payload starts a fresh frame (the peer's decoder is new)."""
        self._frame = None
        self._finished = b""
        self.checksum_payloads = not tls

    def compress(self, batch: bytes | memoryview) -> tuple[bytes | memoryview, int]:
        """(payload, crc32) of a frame-context compressor; the CRC is only computed for
        `none`, zstd carries its own checksum."""
        if self.stream:
            raise ValueError("a stream compressor frames batches with compress_frame")
        if self._zstd is None:
            return batch, zlib.crc32(batch)
        return self._zstd.compress(batch), 0

    def compress_frame(self, batch: bytes | memoryview) -> tuple[bytes | memoryview, int, int, int]:
        """(payload, crc32, codec, flags): a batch that does not shrink goes raw, flagged."""
        zstd = self._zstd
        if zstd is None:
            return batch, zlib.crc32(batch), CodecId.NONE, 0
        if self.stream:
            return self._stream_frame(zstd, batch)
        payload = zstd.compress(batch)
        if len(payload) >= len(batch):
            return batch, zlib.crc32(batch), CodecId.NONE, FLAG_RAW_FALLBACK
        return payload, 0, CodecId.ZSTD, 0

    def _stream_frame(
        self, zstd: zstandard.ZstdCompressor, batch: bytes | memoryview
    ) -> tuple[bytes, int, int, int]:
        """One batch into the connection's open frame, flushed to a block boundary.

        Never raw-fallback: the batch is in the history now, so the peer must decode it
        too (zstd stores an incompressible block raw, 3 bytes of overhead).
        """
        frame = self._frame
        if frame is None:
            frame = self._frame = zstd.compressobj()
        head = frame.compress(batch)
        tail = frame.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        if self._finished or head:
            payload = b"".join((self._finished, head, tail))
            self._finished = b""
        else:
            payload = tail
        return payload, zlib.crc32(payload) if self.checksum_payloads else 0, CodecId.ZSTD, 0


class BatchDecompressor:
    """Verifies and decompresses payloads, never producing more than the declared size."""

    def __init__(self) -> None:
        self._zstd = zstandard.ZstdDecompressor()

    def decompress(self, codec: CodecId, payload: memoryview, raw_length: int, crc32: int) -> int:
        """Verify the payload and return its raw length; CorruptBatchError if anything is off."""
        if codec == CodecId.NONE:
            if zlib.crc32(payload) != crc32:
                raise CorruptBatchError("CRC32 mismatch")
            return len(payload)
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as error:
            raise CorruptBatchError(f"not a zstd frame: {error}") from None
        if declared != raw_length or declared > MAX_RAW_BYTES:
            raise CorruptBatchError(
                f"zstd frame declares {declared} bytes, header says {raw_length}"
            )
        try:
            raw = self._zstd.decompress(payload, max_output_size=raw_length, allow_extra_data=False)
        except zstandard.ZstdError as error:
            raise CorruptBatchError(f"zstd: {error}") from None
        if len(raw) != raw_length:
            raise CorruptBatchError(f"decompressed {len(raw)} bytes, header says {raw_length}")
        return raw_length


#: zstd's frame magic and its largest block (what one block may decode to at most).
_ZSTD_MAGIC = 0xFD2FB528
ZSTD_BLOCK_MAX = 128 * 1024
_FCS_BYTES = (0, 2, 4, 8)
_BLOCK_RAW, _BLOCK_RLE, _BLOCK_COMPRESSED = 0, 1, 2


class StreamDecompressor:
    """Decodes one connection's `stream` payloads in order (one per connection).

    Before anything is decompressed the payload's zstd structure is walked (frame
    headers and block headers: a few operations for the usual one block), so it is
    known to hold whole blocks of at most 128 KiB each; zstd then decodes it block by
    block in the connection's context and stops as soon as the output passes the
    header's raw length, so a payload never decodes to more than raw length + 128 KiB.
    The result must be exactly the raw length.  Duplicates are decoded too (and not
    counted by the caller): they are part of the history the next payloads refer to.
    """

    def __init__(self, *, verify_crc: bool = True, window_log: int = STREAM_WINDOW_LOG) -> None:
        self._zstd = zstandard.ZstdDecompressor(max_window_size=1 << window_log)
        self._max_window = 1 << window_log
        self._verify_crc = verify_crc
        self._decoder: zstandard.ZstdDecompressionObj | None = None
        #: Inside a zstd frame (its header seen, its last block not yet).
        self._in_frame = False
        self._frame_checksum = False

    def decompress(self, codec: CodecId, payload: memoryview, raw_length: int, crc32: int) -> int:
        """Verify and decode the next payload; CorruptBatchError for a CRC mismatch,
        StreamContextError for anything that does not decode in this context."""
        if (self._verify_crc or codec == CodecId.NONE) and zlib.crc32(payload) != crc32:
            raise CorruptBatchError("CRC32 mismatch")
        if codec == CodecId.NONE:
            return len(payload)  # raw frames are not part of the stream
        cuts = self._walk(payload)
        produced = 0
        start = 0
        try:
            for end in cuts:
                decoder = self._decoder
                if decoder is None:
                    decoder = self._decoder = self._zstd.decompressobj()
                produced += len(decoder.decompress(payload[start:end]))
                if produced > raw_length:
                    raise StreamContextError(
                        f"stream payload decodes to more than its raw length {raw_length}"
                    )
                if decoder.eof:
                    self._decoder = None
                start = end
        except zstandard.ZstdError as error:
            raise StreamContextError(f"zstd stream: {error}") from None
        if produced != raw_length:
            raise StreamContextError(f"decoded {produced} bytes, header says {raw_length}")
        return raw_length

    def _walk(self, payload: memoryview) -> list[int]:
        """Where each block (with the frame header before it) ends; StreamContextError if
        the payload is not whole blocks in this context."""
        size = len(payload)
        position = 0
        cuts = []
        in_frame = self._in_frame
        checksum = self._frame_checksum
        while position < size:
            if not in_frame:
                position, checksum = self._frame_header(payload, position)
                in_frame = True
                continue
            if size - position < 3:
                raise StreamContextError("stream payload ends inside a block header")
            header = payload[position] | payload[position + 1] << 8 | payload[position + 2] << 16
            kind = (header >> 1) & 3
            length = header >> 3
            if kind > _BLOCK_COMPRESSED:
                raise StreamContextError("reserved zstd block type")
            if length > ZSTD_BLOCK_MAX:
                raise StreamContextError(f"zstd block of {length} bytes")
            position += 3 + (1 if kind == _BLOCK_RLE else length)
            if header & 1:  # the frame's last block
                position += 4 if checksum else 0
                in_frame = False
            cuts.append(position)
        if position != size or not cuts or cuts[-1] != size:
            raise StreamContextError("stream payload does not end on a block boundary")
        self._in_frame = in_frame
        self._frame_checksum = checksum
        return cuts

    def _frame_header(self, payload: memoryview, position: int) -> tuple[int, bool]:
        if len(payload) - position < 6:
            raise StreamContextError("stream payload ends inside a zstd frame header")
        if int.from_bytes(payload[position : position + 4], "little") != _ZSTD_MAGIC:
            raise StreamContextError("not a zstd frame where one must start")
        descriptor = payload[position + 4]
        single_segment = descriptor >> 5 & 1
        if descriptor & 0x08 or descriptor & 0x03:
            raise StreamContextError("zstd frame with reserved bits or a dictionary")
        if single_segment:
            raise StreamContextError("single-segment zstd frame in a stream")
        window = payload[position + 5]
        base = 1 << (10 + (window >> 3))
        if base + (base >> 3) * (window & 7) > self._max_window:
            raise StreamContextError(f"zstd window above {self._max_window} bytes")
        return position + 6 + _FCS_BYTES[descriptor >> 6], bool(descriptor >> 2 & 1)
