"""Parallel compression hands batches back in source order, byte-exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from w5xde.api.v1alpha1 import CompressionSpec, Profile, WorkloadSpec
from w5xde.worker.producer import ParallelProducer, SerialProducer, make_producer
from w5xde.worker.sources import FileSource, PoolSource, synthetic_pool


@pytest.mark.parametrize("batch_bytes", [3600, 65536])
def test_parallel_results_come_back_in_order(batch_bytes: int) -> None:
    pool = synthetic_pool(Profile.MIXED, 1024 * 1024)
    expected_source = PoolSource(pool, batch_bytes)
    producer = make_producer(
        PoolSource(pool, batch_bytes),
        WorkloadSpec(batch_bytes=batch_bytes),
        CompressionSpec(level=1, threads=3),
    )
    assert isinstance(producer, ParallelProducer)
    decompressor = zstandard.ZstdDecompressor()
    try:
        for _ in range(300):
            compressed = producer.next()
            assert decompressor.decompress(compressed.payload) == bytes(
                expected_source.next_batch()
            )
    finally:
        producer.close()


def test_file_batches_are_copied_before_they_go_to_another_thread(tmp_path: Path) -> None:
    data = bytes(range(256)) * 400
    (tmp_path / "f").write_bytes(data)
    workload = WorkloadSpec(source="file", path=str(tmp_path), batch_bytes=1000)
    producer = make_producer(
        FileSource(str(tmp_path), 1000), workload, CompressionSpec(codec="none", threads=2)
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
    assert isinstance(
        make_producer(PoolSource(pool, big.batch_bytes), big, CompressionSpec(threads=2)),
        SerialProducer,
    )
