"""Codec, sources and topology: the pure parts under the streams."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
import zstandard

from w5xde.api.v1alpha1 import CompressionSpec, Profile, Topology, WorkloadSpec
from w5xde.worker.codec import (
    STREAM_TABLE_LOG,
    BatchCompressor,
    BatchDecompressor,
    CorruptBatchError,
    stream_parameters,
    zstd_threads,
)
from w5xde.worker.level_policy import Prober
from w5xde.worker.protocol import MAX_RAW_BYTES, CodecId
from w5xde.worker.sources import FileSource, PoolSource, open_source, synthetic_pool
from w5xde.worker.topology import targets


@pytest.mark.parametrize("level", [-7, 1, 3, 22])
def test_zstd_round_trip_at_any_level(level: int) -> None:
    batch = synthetic_pool(Profile.MIXED, 64 * 1024)
    payload, crc = BatchCompressor(CompressionSpec(level=level)).compress(batch)
    assert crc == 0
    # The payload is one zstd frame at the asked level, with its size and checksum, and it
    # decodes to exactly the batch's bytes.
    assert bytes(payload) == zstandard.ZstdCompressor(
        level=level, write_checksum=True, write_content_size=True
    ).compress(batch)
    assert zstandard.frame_content_size(payload) == len(batch)
    assert zstandard.get_frame_parameters(payload).has_checksum
    assert zstandard.ZstdDecompressor().decompress(payload) == bytes(batch)
    assert BatchDecompressor().decompress(CodecId.ZSTD, memoryview(payload), len(batch), 0) == len(
        batch
    )


def test_zstd_content_checksum_catches_a_flipped_bit() -> None:
    batch = synthetic_pool(Profile.TEXT, 8192)
    payload, _ = BatchCompressor(CompressionSpec(level=1)).compress(batch)
    broken = bytearray(payload)
    broken[-2] ^= 0x10
    with pytest.raises(CorruptBatchError):
        BatchDecompressor().decompress(CodecId.ZSTD, memoryview(broken), len(batch), 0)


def test_zstd_declared_size_must_match_the_header() -> None:
    payload = zstandard.ZstdCompressor(write_checksum=True).compress(b"a" * 1000)
    with pytest.raises(CorruptBatchError, match="declares"):
        BatchDecompressor().decompress(CodecId.ZSTD, memoryview(payload), 999, 0)


def test_none_codec_uses_crc32() -> None:
    batch = b"plain bytes" * 10
    payload, crc = BatchCompressor(CompressionSpec(codec="none")).compress(batch)
    assert bytes(payload) == batch
    assert crc == zlib.crc32(batch)
    decompressor = BatchDecompressor()
    assert decompressor.decompress(
        CodecId.NONE, memoryview(bytes(payload)), len(batch), crc
    ) == len(batch)
    with pytest.raises(CorruptBatchError, match="CRC32"):
        decompressor.decompress(CodecId.NONE, memoryview(bytes(payload)), len(batch), crc ^ 1)


def test_threads_map_to_zstd_workers() -> None:
    # 1 compresses in the caller (no zstd workers), N asks zstd for N, 0 for one per CPU.
    assert zstd_threads(1) == 0
    assert zstd_threads(2) == 2
    assert zstd_threads(7) == 7
    assert zstd_threads(0) == (os.cpu_count() or 1)


def _zstd(batch: bytes | memoryview, threads: int) -> bytes:
    return zstandard.ZstdCompressor(
        level=3, write_checksum=True, write_content_size=True, threads=threads
    ).compress(batch)


@pytest.mark.parametrize("threads", [0, 2, 4])
def test_threads_compress_in_parallel_and_stay_compatible(threads: int) -> None:
    """zstd's multi-threaded mode splits a big batch into jobs: its frame differs from the
    single-threaded one (and is the same for any number of workers), so the bytes show
    whether the codec really asked zstd for workers."""
    batch = synthetic_pool(Profile.MIXED, 2 * 1024 * 1024)
    single, parallel = _zstd(batch, 0), _zstd(batch, 2)
    assert single != parallel, "this zstd no longer tells its modes apart by the output"
    payload, _ = BatchCompressor(CompressionSpec(level=3, threads=threads)).compress(batch)
    assert bytes(payload) == parallel
    assert zstandard.ZstdDecompressor().decompress(payload) == bytes(batch)
    assert BatchDecompressor().decompress(CodecId.ZSTD, memoryview(payload), len(batch), 0) == len(
        batch
    )


def test_one_thread_compresses_in_the_caller() -> None:
    batch = synthetic_pool(Profile.MIXED, 2 * 1024 * 1024)
    payload, _ = BatchCompressor(CompressionSpec(level=3, threads=1)).compress(batch)
    assert bytes(payload) == _zstd(batch, 0)


@pytest.mark.parametrize(
    ("profile", "low", "high"),
    [
        (Profile.RANDOM, 0.99, 1.01),
        (Profile.TENSORS_F32, 1.02, 1.5),
        (Profile.MIXED, 1.5, 3.0),
        (Profile.TEXT, 2.5, 8.0),
        (Profile.JSON_LOGS, 2.5, 10.0),
    ],
)
def test_profiles_compress_like_their_kind_of_data(
    profile: Profile, low: float, high: float
) -> None:
    pool = synthetic_pool(profile, 1024 * 1024)
    assert len(pool) == 1024 * 1024
    ratio = len(pool) / len(zstandard.ZstdCompressor(level=1).compress(pool))
    assert low <= ratio <= high


def test_pool_batches_rotate_and_never_wrap() -> None:
    source = PoolSource(b"0123456789" * 100, 64)
    batches = [bytes(source.next_batch()) for _ in range(50)]
    assert all(len(batch) == 64 for batch in batches)
    assert len(set(batches)) > 5


def test_file_source_loops_over_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"B" * 50)
    source = FileSource(str(tmp_path), 120)
    first = bytes(source.next_batch())
    second = bytes(source.next_batch())
    assert first == b"A" * 100 + b"B" * 20
    assert second == b"B" * 30 + b"A" * 90


def test_file_source_without_data_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"workload\.path"):
        open_source(WorkloadSpec(source="file", path=str(tmp_path)), None)


@pytest.mark.parametrize(
    ("topology", "index", "workers", "expected"),
    [
        (Topology.RING, 0, 1, []),
        (Topology.RING, 2, 3, [0]),
        (Topology.ALL_TO_ALL, 1, 4, [0, 2, 3]),
        (Topology.PAIRS, 0, 4, [1]),
        (Topology.PAIRS, 3, 4, [2]),
        (Topology.PAIRS, 4, 5, [3]),
    ],
)
def test_topologies(topology: Topology, index: int, workers: int, expected: list[int]) -> None:
    assert targets(topology, index, workers) == expected


def test_one_per_cpu_falls_back_to_one_when_the_cpus_are_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert zstd_threads(0) == 1


def _frame(batch: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(batch)


@pytest.mark.parametrize(
    ("payload", "raw_length", "reason"),
    [
        (b"not zstd at all", 15, "not a zstd frame: "),
        (_frame(b"a" * 1000), 999, "zstd frame declares 1000 bytes, header says 999"),
        # A valid frame with bytes behind it: only exactly one frame is a batch.
        (_frame(b"a" * 1000) + b"junk", 1000, "zstd: "),
        (_frame(b"a" * 1000)[:-6], 1000, "zstd: "),
    ],
)
def test_each_corrupt_zstd_payload_gives_its_reason(
    payload: bytes, raw_length: int, reason: str
) -> None:
    with pytest.raises(CorruptBatchError) as refused:
        BatchDecompressor().decompress(CodecId.ZSTD, memoryview(payload), raw_length, 0)
    # The reason, then (after a colon) what zstd itself said.
    assert str(refused.value).startswith(reason), refused.value


def test_a_crc_mismatch_says_so() -> None:
    with pytest.raises(CorruptBatchError) as refused:
        BatchDecompressor().decompress(CodecId.NONE, memoryview(b"abc"), 3, zlib.crc32(b"abd"))
    assert str(refused.value) == "CRC32 mismatch"


def test_the_largest_batch_decompresses() -> None:
    """64 MiB is allowed (the API's bound); the check refuses only what is beyond it."""
    batch = bytes(MAX_RAW_BYTES)
    payload = _frame(batch)
    assert (
        BatchDecompressor().decompress(CodecId.ZSTD, memoryview(payload), MAX_RAW_BYTES, 0)
        == MAX_RAW_BYTES
    )


@pytest.mark.parametrize("level", [1, 3, 6, 9, 12, 19])
def test_a_stream_context_s_tables_fit_its_window_at_every_level(level: int) -> None:
    """zstd sizes a stream's tables for large inputs (41 MB at level 12): `level: auto`
    probes 9 and 12 in every stream, and a worker held 118 MB instead of 60."""
    params = stream_parameters(level)
    assert params.window_log == 17
    assert params.hash_log <= STREAM_TABLE_LOG
    assert params.chain_log <= STREAM_TABLE_LOG
    compressor = BatchCompressor(CompressionSpec(level=level, context="stream"), stream=True)
    compressor.new_connection(tls=True)
    batch = PoolSource(synthetic_pool(Profile.MIXED, 256 * 1024), 65536).next_batch()
    payload, _, _, _ = compressor.compress_frame(batch)
    decoded = zstandard.ZstdDecompressor().decompressobj().decompress(bytes(payload))
    assert decoded == bytes(batch)
    assert compressor._zstd is not None
    assert compressor._zstd.memory_size() < 2.5 * 1024 * 1024
    prober = Prober((0, level), stream=True)
    assert all(context.memory_size() < 2.5 * 1024 * 1024 for context in prober._contexts.values())
