"""Batch compression and verified decompression (zstd with content checksums, or none+CRC32).

One `BatchCompressor`/`BatchDecompressor` per stream thread: zstandard contexts are
not thread-safe, and reusing a context avoids re-allocating its tables per batch.
"""

from __future__ import annotations

import os
import zlib

import zstandard

from w5xde.api.v1alpha1 import Codec, CompressionSpec
from w5xde.worker.protocol import FLAG_RAW_FALLBACK, MAX_RAW_BYTES, CodecId

#: The level value that means "send raw" (zstd's own level 0 means its default, 3).
RAW_LEVEL = 0


class CorruptBatchError(Exception):
    """A frame whose payload fails verification: counted as corrupt, the stream is dropped."""


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

    def __init__(self, spec: CompressionSpec) -> None:
        self.codec_id = CodecId.ZSTD if spec.codec == Codec.ZSTD else CodecId.NONE
        self._threads = zstd_threads(spec.threads)
        self._contexts: dict[int, zstandard.ZstdCompressor] = {}
        self._zstd: zstandard.ZstdCompressor | None = None
        self.level = RAW_LEVEL
        if self.codec_id == CodecId.ZSTD:
            self.set_level(spec.fixed_level)

    def set_level(self, level: int) -> None:
        """Compress the next batches at `level` (RAW_LEVEL: send them raw)."""
        if self.codec_id != CodecId.ZSTD:
            return
        self.level = level
        if level == RAW_LEVEL:
            self._zstd = None
            return
        context = self._contexts.get(level)
        if context is None:
            context = zstandard.ZstdCompressor(
                level=level, write_checksum=True, write_content_size=True, threads=self._threads
            )
            self._contexts[level] = context
        self._zstd = context

    def compress(self, batch: bytes | memoryview) -> tuple[bytes | memoryview, int]:
        """(payload, crc32); the CRC is only computed for `none`, zstd carries its own checksum."""
        if self._zstd is None:
            return batch, zlib.crc32(batch)
        return self._zstd.compress(batch), 0

    def compress_frame(self, batch: bytes | memoryview) -> tuple[bytes | memoryview, int, int, int]:
        """(payload, crc32, codec, flags): a batch that does not shrink goes raw, flagged."""
        zstd = self._zstd
        if zstd is None:
            return batch, zlib.crc32(batch), CodecId.NONE, 0
        payload = zstd.compress(batch)
        if len(payload) >= len(batch):
            return batch, zlib.crc32(batch), CodecId.NONE, FLAG_RAW_FALLBACK
        return payload, 0, CodecId.ZSTD, 0


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
