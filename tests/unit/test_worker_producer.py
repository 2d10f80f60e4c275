"""Parallel compression hands batches back in source order, byte-exact."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import zstandard

from w5xde.api.v1alpha1 import CompressionSpec, Profile, WorkloadSpec
from w5xde.worker.producer import (
    Compressed,
    CompressionPool,
    ParallelProducer,
    SerialProducer,
    make_producer,
)
from w5xde.worker.protocol import FLAG_RAW_FALLBACK, CodecId
from w5xde.worker.sources import FileBatch, FileSource, PoolSource, SourceError, synthetic_pool


@pytest.mark.parametrize("batch_bytes", [3600, 65536])
def test_parallel_results_come_back_in_order(batch_bytes: int) -> None:
    pool = synthetic_pool(Profile.MIXED, 1024 * 1024)
    expected_source = PoolSource(pool, batch_bytes)
    producer = make_producer(
        PoolSource(pool, batch_bytes),
        WorkloadSpec(batch_bytes=batch_bytes),
        CompressionSpec(level=1, threads=3, context="frame"),
    )
    assert isinstance(producer, ParallelProducer)
    assert producer.threads == 3
    # Each compression thread compresses whole batches on its own (no zstd workers).
    reference = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
    decompressor = zstandard.ZstdDecompressor()
    workers: set[str] = set()
    try:
        for _ in range(300):
            compressed = producer.next()
            expected = bytes(expected_source.next_batch())
            assert compressed.raw_length == len(expected)
            if compressed.codec == CodecId.NONE:
                # A batch that does not shrink (the mixed pool's random pieces) goes raw.
                assert compressed.flags == FLAG_RAW_FALLBACK
                assert bytes(compressed.payload) == expected
                assert len(reference.compress(expected)) >= len(expected)
                continue
            assert bytes(compressed.payload) == reference.compress(expected)
            assert decompressor.decompress(compressed.payload) == expected
        workers = {t.name for t in threading.enumerate() if t.name.startswith("compress")}
    finally:
        producer.close()
    # The batches were compressed off the stream's thread, by the producer's pool.
    assert 1 <= len(workers) <= 3


def test_threads_zero_means_one_compression_thread_per_cpu() -> None:
    pool = synthetic_pool(Profile.MIXED, 256 * 1024)
    producer = make_producer(
        PoolSource(pool, 4096),
        WorkloadSpec(batch_bytes=4096),
        CompressionSpec(threads=0, context="frame"),
    )
    try:
        cpus = os.cpu_count() or 1
        if cpus > 1:
            assert isinstance(producer, ParallelProducer)
            assert producer.threads == cpus
        else:
            assert isinstance(producer, SerialProducer)
    finally:
        producer.close()


def test_file_batches_are_copied_before_they_go_to_another_thread(tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    (tmp_path / "f").write_bytes(data)
    workload = WorkloadSpec(source="file", path=str(tmp_path), batch_bytes=1000)
    producer = make_producer(
        FileSource(str(tmp_path), 1000),
        workload,
        CompressionSpec(codec="none", threads=2, context="frame"),
    )
    try:
        stream = b"".join(bytes(producer.next().payload) for _ in range(150))
    finally:
        producer.close()
    assert stream == (data * 2)[:150_000]


def test_one_thread_or_big_batches_compress_in_the_stream_thread() -> None:
    pool = synthetic_pool(Profile.TEXT, 4 * 1024 * 1024)
    assert isinstance(
        make_producer(PoolSource(pool, 65536), WorkloadSpec(), CompressionSpec(threads=1)),
        SerialProducer,
    )
    big = WorkloadSpec(batch_bytes=2 * 1024 * 1024)
    pool = synthetic_pool(Profile.MIXED, 4 * 1024 * 1024)
    producer = make_producer(
        PoolSource(pool, big.batch_bytes), big, CompressionSpec(threads=2, context="frame")
    )
    assert isinstance(producer, SerialProducer)
    # A big batch is split by zstd's own workers: its frame is zstd's multi-threaded one.
    batch = bytes(PoolSource(pool, big.batch_bytes).next_batch())
    payload = bytes(producer.next().payload)
    parameters = {"level": 3, "write_checksum": True, "write_content_size": True}
    assert payload == zstandard.ZstdCompressor(**parameters, threads=2).compress(batch)
    assert payload != zstandard.ZstdCompressor(**parameters).compress(batch)


def test_streams_share_one_compression_pool_and_each_keeps_its_order() -> None:
    """A worker's streams compress on its `threads` threads, not `threads` each."""
    pool_data = synthetic_pool(Profile.MIXED, 1024 * 1024)
    compression = CompressionSpec(level=1, threads=2, context="frame")
    workload = WorkloadSpec(batch_bytes=3600)
    shared = CompressionPool(compression, 2)
    before = {thread.name for thread in threading.enumerate()}
    producers = [
        make_producer(PoolSource(pool_data, 3600, start), workload, compression, shared)
        for start in (0, 50_000, 100_000, 150_000, 200_000)
    ]
    expected = [
        PoolSource(pool_data, 3600, start) for start in (0, 50_000, 100_000, 150_000, 200_000)
    ]
    decompressor = zstandard.ZstdDecompressor()
    try:
        for _ in range(120):
            for producer, source in zip(producers, expected, strict=True):
                assert _raw(producer.next(), decompressor) == bytes(source.next_batch())
        started = {thread.name for thread in threading.enumerate()} - before
        assert len([name for name in started if name.startswith("compress")]) <= 2
        # One stream ending leaves the pool to the others.
        producers[0].close()
        assert _raw(producers[1].next(), decompressor) == bytes(expected[1].next_batch())
    finally:
        for producer in producers[1:]:
            producer.close()
        shared.shutdown()


def _raw(compressed: Compressed, decompressor: zstandard.ZstdDecompressor) -> bytes:
    """The batch a producer's result carries, compressed or sent raw."""
    if compressed.codec == CodecId.NONE:
        return bytes(compressed.payload)
    return bytes(decompressor.decompress(compressed.payload))


def test_under_stream_a_file_batch_is_kept_by_its_place_and_a_pool_batch_as_a_view(
    tmp_path: Path,
) -> None:
    """The replay window keeps the raw batch under stream: a file source reuses its
    buffer, so its batches are kept as places in the file (a copy of each held up to
    the whole replay budget with a stalled peer) and read again for a replay; the
    synthetic pool never changes, so its batches stay views (no copy)."""
    data = bytes(range(256)) * 64
    (tmp_path / "data").write_bytes(data)
    spec = CompressionSpec(level=1, context="stream")
    from_file = make_producer(FileSource(str(tmp_path), 4096), WorkloadSpec(batch_bytes=4096), spec)
    first = from_file.next()
    second = from_file.next()
    assert isinstance(first.batch, FileBatch)
    assert isinstance(second.batch, FileBatch)
    assert len(first.batch) == 4096
    assert first.batch.read() == data[:4096]
    assert second.batch.read() == data[4096:8192]
    again = from_file.recompress(second.batch)
    assert again.raw_length == 4096
    assert again.batch is second.batch
    pool = synthetic_pool(Profile.MIXED, 256 * 1024)
    from_pool = make_producer(PoolSource(pool, 4096), WorkloadSpec(batch_bytes=4096), spec)
    kept = from_pool.next().batch
    assert isinstance(kept, memoryview)
    assert kept.obj is not None


def test_a_batch_across_files_is_read_again_from_each_of_them(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A" * 1500)
    (tmp_path / "b").write_bytes(b"B" * 700)
    source = FileSource(str(tmp_path), 1000)
    batches = []
    for _ in range(5):
        batch = bytes(source.next_batch())
        batches.append((batch, source.last_batch()))
    # From the second batch on, each one ends a file and starts the next (or wraps).
    assert batches[1][0] == b"A" * 500 + b"B" * 500
    assert batches[2][0] == b"B" * 200 + b"A" * 800
    assert [len(place.spans) for _, place in batches] == [1, 2, 2, 2, 2]
    assert all(place.read() == batch for batch, place in batches)
    source.close()


def test_a_file_changed_since_its_batch_was_read_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 4096)
    source = FileSource(str(path), 1024)
    source.next_batch()
    place = source.last_batch()
    source.close()
    path.write_bytes(b"y" * 4000)
    with pytest.raises(SourceError, match=r"workload.path: .*changed"):
        place.read()
    path.unlink()
    with pytest.raises(SourceError, match=r"workload.path: .*cannot be read again"):
        place.read()
