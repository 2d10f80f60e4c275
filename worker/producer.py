"""Compressed batches for a sender stream, one at a time or from parallel compression threads.

zstd's own multithreading only splits inputs of several hundred KiB into jobs, so a
stream of small batches gets its parallelism here instead: `threads` compression
threads work on consecutive batches (zstandard releases the GIL) and the results
are handed out in order.  Large batches use zstd's internal threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from w5xde.api.v1alpha1 import CompressionContext, CompressionSpec, Source, WorkloadSpec
from w5xde.worker.codec import BatchCompressor
from w5xde.worker.protocol import CodecId
from w5xde.worker.sources import BatchSource, FileBatch, FileSource

#: What a stream's replay window keeps of a batch under `context: stream`.
KeptBatch = bytes | memoryview | FileBatch

#: From this batch size on, zstd's internal job splitting parallelises a single batch.
ZSTD_INTERNAL_THREADS_FROM = 1024 * 1024
#: Batches are handed to a compression thread in groups of about this many bytes.
GROUP_BYTES = 256 * 1024


@dataclass(slots=True)
class Compressed:
    """One batch ready for framing (not frozen: built once per batch, on the hot path)."""

    payload: bytes | memoryview
    crc32: int
    raw_length: int
    seconds: float
    codec: int = CodecId.ZSTD
    flags: int = 0
    #: Under `context: stream`, the raw batch (owned, or where a file source can read
    #: it again): what the replay window keeps, since a payload compressed in one
    #: connection's context means nothing in the next.
    batch: KeptBatch | None = None


class Sampler(Protocol):
    """Takes a copy of a batch now and then (`level: auto`'s probes, level_policy.Prober)."""

    due: bool

    def offer(self, batch: bytes | memoryview) -> None: ...


class BatchProducer(Protocol):
    codec_id: CodecId
    #: Set by the stream under `level: auto`; read per batch only as `is not None`.
    sampler: Sampler | None

    def next(self) -> Compressed: ...

    def set_level(self, level: int) -> None: ...

    def new_connection(self, *, tls: bool) -> None: ...

    def recompress(self, batch: KeptBatch) -> Compressed: ...

    def close(self) -> None: ...


def _own_payload(payload: bytes | memoryview, codec_id: int) -> bytes | memoryview:
    # An uncompressed payload is a view of the source; the window must own its bytes.
    return bytes(payload) if codec_id == CodecId.NONE else payload


class SerialProducer:
    """Compress in the stream's own thread (always so under `context: stream`)."""

    def __init__(self, source: BatchSource, compression: CompressionSpec) -> None:
        self._source = source
        self._compressor = BatchCompressor(
            compression, stream=compression.context == CompressionContext.STREAM
        )
        self.codec_id = self._compressor.codec_id
        self.sampler: Sampler | None = None
        self._stream = self._compressor.stream
        #: A stable source's batches may be kept as they are (no copy per batch), a file
        #: source's by their place in the file; anything else is copied.
        self._copy = not getattr(source, "stable_batches", False)
        self._located = source if isinstance(source, FileSource) else None

    def set_level(self, level: int) -> None:
        self._compressor.set_level(level)

    def new_connection(self, *, tls: bool) -> None:
        """A fresh connection: stream payloads start a new zstd frame."""
        self._compressor.new_connection(tls=tls)

    def next(self) -> Compressed:
        batch = self._source.next_batch()
        sampler = self.sampler
        if sampler is not None and sampler.due:
            sampler.offer(batch)
        if self._stream:
            if self._located is not None:
                return self._compress_stream(batch, self._located.last_batch())
            kept = bytes(batch) if self._copy else batch
            return self._compress_stream(kept, kept)
        started = time.perf_counter()
        payload, crc, codec, flags = self._compressor.compress_frame(batch)
        seconds = time.perf_counter() - started
        return Compressed(_own_payload(payload, codec), crc, len(batch), seconds, codec, flags)

    def recompress(self, batch: KeptBatch) -> Compressed:
        """Stream: a kept batch into the current connection's context (new or replayed)."""
        if isinstance(batch, FileBatch):
            return self._compress_stream(batch.read(), batch)
        return self._compress_stream(batch, batch)

    def _compress_stream(self, batch: bytes | memoryview, kept: KeptBatch) -> Compressed:
        started = time.perf_counter()
        payload, crc, codec, flags = self._compressor.compress_frame(batch)
        seconds = time.perf_counter() - started
        # A raw payload (a batch that did not shrink) is a view of a reused buffer.
        if isinstance(kept, FileBatch):
            payload = _own_payload(payload, codec)
        return Compressed(payload, crc, len(batch), seconds, codec, flags, kept)

    def close(self) -> None:
        self._source.close()


class CompressionPool:
    """`threads` compression threads, each with one zstd context, for one or many streams.

    A worker makes one and hands it to every outgoing stream, so its compression threads
    and contexts are `threads`, however many peers it has (not `threads` per stream).
    """

    def __init__(self, compression: CompressionSpec, threads: int) -> None:
        self.spec = compression.model_copy(update={"threads": 1})
        self.threads = threads
        self.codec_id = BatchCompressor(self.spec).codec_id
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="compress")

    def submit(
        self, batches: list[bytes | memoryview], level: int | None = None
    ) -> Future[list[Compressed]]:
        """Compress a group on a pool thread, at `level` (a stream's own, under auto)."""
        return self._executor.submit(self._compress, batches, level)

    def _compress(self, batches: list[bytes | memoryview], level: int | None) -> list[Compressed]:
        compressor: BatchCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = BatchCompressor(self.spec)
            self._local.compressor = compressor
        if level is not None and level != compressor.level:
            compressor.set_level(level)
        out = []
        for batch in batches:
            started = time.perf_counter()
            payload, crc, codec, flags = compressor.compress_frame(batch)
            seconds = time.perf_counter() - started
            out.append(
                Compressed(_own_payload(payload, codec), crc, len(batch), seconds, codec, flags)
            )
        return out

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ParallelProducer:
    """Batches compressed on a `CompressionPool`, handed out in source order.

    Each task is a group of consecutive batches (about 256 KiB), so the hand-over
    between threads, which goes through the GIL, is paid once per group, not per batch.
    Without a shared pool the producer makes (and closes) its own.
    """

    def __init__(
        self,
        source: BatchSource,
        compression: CompressionSpec,
        threads: int,
        *,
        batch_bytes: int,
        copy: bool,
        pool: CompressionPool | None = None,
    ) -> None:
        self._source = source
        self._owns_pool = pool is None
        self._pool = pool if pool is not None else CompressionPool(compression, threads)
        self.codec_id = self._pool.codec_id
        #: How many compression threads work on this stream's batches.
        self.threads = self._pool.threads
        self._copy = copy
        self._group = max(1, GROUP_BYTES // batch_bytes)
        self._depth = 2 * self._pool.threads
        self._in_flight: deque[Future[list[Compressed]]] = deque()
        self._ready: deque[Compressed] = deque()
        self.sampler: Sampler | None = None
        #: None: the pool's own level (fixed levels); a stream's level under auto.
        self._level: int | None = None

    def set_level(self, level: int) -> None:
        self._level = level

    def new_connection(self, *, tls: bool) -> None:
        """Frame context only: nothing depends on the connection."""

    def recompress(self, batch: KeptBatch) -> Compressed:
        raise NotImplementedError("the parallel producer compresses frames, never a stream")

    def next(self) -> Compressed:
        if not self._ready:
            while len(self._in_flight) < self._depth:
                # A file source reuses its buffer: a batch in flight needs its own copy.
                group: list[bytes | memoryview] = [
                    bytes(self._source.next_batch()) if self._copy else self._source.next_batch()
                    for _ in range(self._group)
                ]
                sampler = self.sampler
                if sampler is not None and sampler.due:
                    sampler.offer(group[0])
                self._in_flight.append(self._pool.submit(group, self._level))
            self._ready.extend(self._in_flight.popleft().result())
        return self._ready.popleft()

    def close(self) -> None:
        self._source.close()
        if self._owns_pool:
            self._pool.shutdown()
        else:
            for future in self._in_flight:
                future.cancel()  # a shared pool goes on for the other streams
        self._in_flight.clear()
        self._ready.clear()


def compression_threads(compression: CompressionSpec) -> int:
    """The API's `threads`: 0 means one per CPU."""
    return compression.threads or os.cpu_count() or 1


def uses_pool(workload: WorkloadSpec, compression: CompressionSpec) -> bool:
    """Whether streams compress on a pool of threads (small batches, `threads` > 1, frame).

    Under `context: stream` one connection's batches form one zstd frame, compressed in
    order by the stream's own thread: parallelism comes from the streams (and zstd's
    own threads for batches of 1 MiB and more).
    """
    return (
        compression.context == CompressionContext.FRAME
        and compression_threads(compression) > 1
        and workload.batch_bytes < ZSTD_INTERNAL_THREADS_FROM
    )


def make_producer(
    source: BatchSource,
    workload: WorkloadSpec,
    compression: CompressionSpec,
    pool: CompressionPool | None = None,
) -> BatchProducer:
    """Parallel threads for small batches when `threads` > 1; zstd's own threads for big ones.

    `pool`, when given, is the worker's one `CompressionPool` that every stream shares.
    """
    if uses_pool(workload, compression):
        return ParallelProducer(
            source,
            compression,
            compression_threads(compression),
            batch_bytes=workload.batch_bytes,
            copy=workload.source == Source.FILE,
            pool=pool,
        )
    if workload.batch_bytes < ZSTD_INTERNAL_THREADS_FROM and compression.threads != 1:
        # zstd's own threads only pay from about 1 MiB per flush (stream, small batches).
        compression = compression.model_copy(update={"threads": 1})
    return SerialProducer(source, compression)
