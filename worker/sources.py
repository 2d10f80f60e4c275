"""Where batches come from: a synthetic pool generated once, or a file/directory read in a loop.

The synthetic pool is built before the stream starts and then only sliced (zero-copy
memoryviews), so generating data never shows up in a run's profile.  The pool is
bounded (a few MiB) to keep a worker's memory small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import random
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path
from typing import Protocol

from w5xde.api.v1alpha1 import Profile, Source, WorkloadSpec

POOL_BYTES = 4 * 1024 * 1024
#: Slices start at offsets this far apart so consecutive batches differ.
_STRIDE_PRIME = 4099

_WORD_TEXT = (
    "the of and to in is was for on are with as by at from that this be it an or have "
    "compression cluster worker stream batch node kernel socket buffer network latency "
    "throughput pod service operator replica status metric window frame header checksum "
    "request response error retry timeout schedule volume config secret deploy rollout "
    "data value system process thread memory storage index query table record event log"
)
_WORDS = tuple(_WORD_TEXT.split())
_SERVICES = ("api", "auth", "billing", "search", "ingest", "scheduler", "gateway")
_LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")
_PATHS = ("/v1/items", "/v1/users", "/healthz", "/v1/orders", "/v2/search", "/metrics")


class BatchSource(Protocol):
    """Hands out batches of `batch_bytes`; the returned view is valid until the next call."""

    def next_batch(self) -> memoryview: ...

    def close(self) -> None:
        """Release what the source holds open (a file source's handle)."""


class SourceError(ValueError):
    """The workload's data cannot be read as it was (named by its field, `workload.path`)."""


#: Part of a batch: (file, offset, length, its identity when opened: inode, size and
#: mtime in ns, so a file replaced or rewritten since is noticed).  A plain tuple: one
#: is made per batch on the hot path.
FileSpan = tuple[Path, int, int, tuple[int, int, int]]


class FileBatch:
    """Where a file source's batch came from: enough to read it again for a replay.

    Under `context: stream` a batch waiting for its acknowledgement must be compressed
    again into a new connection's context after a reconnect.  A copy of each raw batch
    held that way cost up to the worker's whole replay budget (16 MiB) with a stalled
    peer; the file still has the bytes, so the window keeps their place instead.
    """

    __slots__ = ("spans",)

    def __init__(self, spans: tuple[FileSpan, ...]) -> None:
        self.spans = spans

    def __len__(self) -> int:
        return sum(span[2] for span in self.spans)

    def read(self) -> bytes:
        """The batch's bytes again; `SourceError` when a file changed under the run."""
        parts = []
        for path, offset, length, identity in self.spans:
            try:
                with path.open("rb") as handle:
                    if _identity(os.fstat(handle.fileno())) != identity:
                        raise SourceError(
                            f"workload.path: {str(path)!r} changed while batches read "
                            "from it waited for their acknowledgement; a file source must "
                            "not change during a run"
                        )
                    parts.append(os.pread(handle.fileno(), length, offset))
            except OSError as error:
                raise SourceError(
                    f"workload.path: {str(path)!r} cannot be read again: {error}"
                ) from error
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


#: The pool is filled in pieces of this size (in `mixed`, consecutive pieces alternate
#: between the kinds of data).
_PIECE = 16 * 1024


def _text(rng: random.Random) -> Iterator[bytes]:
    while True:
        yield " ".join(rng.choices(_WORDS, k=14)).capitalize().encode() + b". "


def _json_logs(rng: random.Random) -> Iterator[bytes]:
    second = 1_767_225_600
    while True:
        second += rng.randrange(3)
        line = {
            "ts": f"2026-01-01T{(second // 3600) % 24:02d}:{(second // 60) % 60:02d}:"
            f"{second % 60:02d}.{rng.randrange(1000):03d}Z",
            "level": rng.choice(_LEVELS),
            "service": rng.choice(_SERVICES),
            "path": rng.choice(_PATHS),
            "status": rng.choice((200, 200, 200, 201, 404, 500)),
            "latency_ms": round(rng.expovariate(1 / 20), 2),
            "request_id": f"{rng.getrandbits(64):016x}",
            "msg": " ".join(rng.choices(_WORDS, k=rng.randrange(3, 9))),
        }
        yield json.dumps(line, separators=(",", ":")).encode() + b"\n"


_EXPONENTS = bytes((0x3C, 0x3D, 0x3E, 0xBC, 0xBD, 0xBE, 0x3F, 0xBF) * 32)


def _tensors_f32(rng: random.Random) -> Iterator[bytes]:
    """Little-endian float32 values near +-1 (weights-like): random mantissas, few exponents."""
    while True:
        data = bytearray(rng.randbytes(_PIECE))
        data[3::4] = data[3::4].translate(_EXPONENTS)
        yield bytes(data)


def _random(rng: random.Random) -> Iterator[bytes]:
    while True:
        yield rng.randbytes(_PIECE)


class _Pieces:
    """Cuts a stream of variable-sized chunks into exact pieces."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._held = bytearray()

    def take(self, size: int) -> bytes:
        while len(self._held) < size:
            self._held += next(self._chunks)
        piece = bytes(self._held[:size])
        del self._held[:size]
        return piece


def _fill(size: int, order: list[_Pieces]) -> bytearray:
    """`size` bytes, written in place piece by piece, cycling through `order`.

    The pool's bytes are the only large allocation: generating a whole part of each
    kind first and copying them together once made a worker's start peak 8 MB above
    its steady RSS, and that start was its peak RSS (docs/PERFORMANCE.md, Memory).
    """
    out = bytearray(size)
    filled = 0
    while filled < size:
        for pieces in order:
            take = min(_PIECE, size - filled)
            out[filled : filled + take] = pieces.take(take)
            filled += take
            if filled == size:
                break
    return out


_KINDS = {
    Profile.TEXT: _text,
    Profile.JSON_LOGS: _json_logs,
    Profile.TENSORS_F32: _tensors_f32,
    Profile.RANDOM: _random,
}
#: `mixed`: interleaved 16 KiB pieces of text, JSON logs, tensors and a little random data.
_MIXED_ORDER = (
    Profile.TEXT, Profile.JSON_LOGS, Profile.TENSORS_F32,
    Profile.TEXT, Profile.JSON_LOGS, Profile.TENSORS_F32,
    Profile.JSON_LOGS, Profile.TEXT, Profile.RANDOM,
)  # fmt: skip


def synthetic_pool(profile: Profile, size: int = POOL_BYTES, seed: int = 5) -> bytearray:
    """`size` bytes of the profile's data; the same seed gives the same bytes.

    Never written after it is made: every stream slices it (read-only views).
    """
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    if profile == Profile.MIXED:
        kinds = {kind: _Pieces(make(rng)) for kind, make in _KINDS.items()}
        pool = _fill(size, [kinds[kind] for kind in _MIXED_ORDER])
    else:
        pool = _fill(size, [_Pieces(_KINDS[profile](rng))])
    release_free_heap()
    return pool


def release_free_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc `malloc_trim`; best effort)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return


class PoolSource:
    """Batches sliced from a shared pool at rotating offsets, without copying."""

    #: Its views stay valid after the next call (the pool never changes): a replay
    #: window may keep them without a copy.
    stable_batches = True

    def __init__(self, pool: bytes | bytearray, batch_bytes: int, start: int = 0) -> None:
        if len(pool) < batch_bytes:
            pool = pool * (batch_bytes // max(1, len(pool)) + 1)
        # Batches start only where a whole one fits, so a slice never wraps around and
        # the pool is used as it is (no second copy with its head appended: 4 MiB less
        # at every worker's start, where its peak RSS is).
        self._view = memoryview(pool)
        self._span = len(pool) - batch_bytes + 1
        self._batch = batch_bytes
        self._offset = start % len(self._view) % self._span

    def at(self, start: int) -> PoolSource:
        """Another source over the same pool bytes (no copy), starting at `start`.

        Every stream of a worker needs its own offset but not its own pool: one
        4 MiB copy per stream was most of a worker's memory with many peers.
        """
        other = PoolSource.__new__(PoolSource)
        other._view = self._view
        other._span = self._span
        other._batch = self._batch
        other._offset = start % len(self._view) % self._span
        return other

    def next_batch(self) -> memoryview:
        offset = self._offset
        self._offset = (offset + self._batch + _STRIDE_PRIME) % self._span
        return self._view[offset : offset + self._batch]

    def close(self) -> None:
        """Nothing to release: the pool is shared and lives as long as the worker."""


class FileSource:
    """A file, or every regular file under a directory, read batch by batch, forever.

    Its buffer is reused, so a batch is valid until the next call; `last_batch` says
    where the batch came from, for a replay window that keeps no copy (`FileBatch`).
    """

    def __init__(self, path: str, batch_bytes: int) -> None:
        self._files = [file for file in _regular_files(Path(path)) if file.stat().st_size > 0]
        if not self._files:
            raise SourceError(f"workload.path: {path!r} has no non-empty regular file to read")
        self._buffer = bytearray(batch_bytes)
        self._view = memoryview(self._buffer)
        self._batch = batch_bytes
        self._next_file = 0
        self._last = FileBatch(())
        self._handle, self._file, self._position, self._file_identity = self._open_next()

    def _open_next(self) -> tuple[BufferedReader, Path, int, tuple[int, int, int]]:
        file = self._files[self._next_file]
        self._next_file = (self._next_file + 1) % len(self._files)
        handle = file.open("rb")
        return handle, file, 0, _identity(os.fstat(handle.fileno()))

    def next_batch(self) -> memoryview:
        count = self._handle.readinto(self._view)
        if count == self._batch:  # the common case: one read within one file
            self._last = FileBatch(((self._file, self._position, count, self._file_identity),))
            self._position += count
            return self._view
        filled = count or 0
        spans: list[FileSpan] = []
        if filled:
            spans.append((self._file, self._position, filled, self._file_identity))
            self._position += filled
        empty_reads = 0
        while filled < self._batch:
            count = self._handle.readinto(self._view[filled:])
            if count:
                spans.append((self._file, self._position, count, self._file_identity))
                self._position += count
                filled += count
                empty_reads = 0
                continue
            empty_reads += 1
            if empty_reads > len(self._files):
                raise SourceError("workload.path: every file became empty while reading")
            self._handle.close()
            self._handle, self._file, self._position, self._file_identity = self._open_next()
        self._last = FileBatch(_merged(spans))
        return self._view

    def last_batch(self) -> FileBatch:
        """Where the batch `next_batch` returned last came from."""
        return self._last

    def close(self) -> None:
        self._handle.close()


def _merged(spans: list[FileSpan]) -> tuple[FileSpan, ...]:
    """Adjacent reads of one file as one span (a buffered reader may return short reads)."""
    merged: list[FileSpan] = []
    for span in spans:
        last = merged[-1] if merged else None
        if last and last[0] == span[0] and last[1] + last[2] == span[1]:
            merged[-1] = (last[0], last[1], last[2] + span[2], last[3])
        else:
            merged.append(span)
    return tuple(merged)


def _regular_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(item for item in path.rglob("*") if item.is_file())


def open_source(
    workload: WorkloadSpec, pool: bytes | bytearray | None, start: int = 0
) -> BatchSource:
    """The batch source for one stream (each stream starts at its own offset)."""
    if workload.source == Source.FILE:
        return FileSource(workload.path, workload.batch_bytes)
    if pool is None:
        pool = synthetic_pool(workload.profile)
    return PoolSource(pool, workload.batch_bytes, start)
