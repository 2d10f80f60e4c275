"""Where batches come from: a synthetic pool generated once, or a file/directory read in a loop.

The synthetic pool is built before the stream starts and then only sliced (zero-copy
memoryviews), so generating data never shows up in a run's profile.  The pool is
bounded (a few MiB) to keep a worker's memory small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
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


def _text(rng: random.Random, size: int) -> bytes:
    words = rng.choices(_WORDS, k=size // 5 + 16)
    out = bytearray()
    for start in range(0, len(words), 14):
        out += " ".join(words[start : start + 14]).capitalize().encode() + b". "
        if len(out) >= size:
            break
    return bytes(memoryview(out)[:size])


def _json_logs(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    second = 1_767_225_600
    while len(out) < size:
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
        out += json.dumps(line, separators=(",", ":")).encode() + b"\n"
    return bytes(memoryview(out)[:size])


def _tensors_f32(rng: random.Random, size: int) -> bytes:
    """Little-endian float32 values near +-1 (weights-like): random mantissas, few exponents."""
    size -= size % 4
    data = bytearray(rng.randbytes(size))
    exponents = bytes((0x3C, 0x3D, 0x3E, 0xBC, 0xBD, 0xBE, 0x3F, 0xBF) * 32)
    data[3::4] = data[3::4].translate(exponents)
    return bytes(data)


def _random(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _mixed(rng: random.Random, size: int) -> bytes:
    """Interleaved 16 KiB pieces of text, JSON logs, tensors and a little random data."""
    piece = 16 * 1024
    parts = {
        "text": _text(rng, size // 3 + piece),
        "json": _json_logs(rng, size // 3 + piece),
        "tensors": _tensors_f32(rng, size // 4 + piece),
        "random": _random(rng, size // 12 + piece),
    }
    order = ("text", "json", "tensors", "text", "json", "tensors", "json", "text", "random")
    cursors = dict.fromkeys(parts, 0)
    # Filled in place (no growing buffer, no slice copies): the pool's peak memory is
    # part of every worker's peak RSS.
    out = bytearray(size + len(order) * piece)
    filled = 0
    while filled < size:
        for name in order:
            source = parts[name]
            start = cursors[name] % max(1, len(source) - piece)
            chunk = memoryview(source)[start : start + piece]
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            cursors[name] = start + piece
    parts.clear()
    return bytes(memoryview(out)[:size])


_GENERATORS = {
    Profile.TEXT: _text,
    Profile.JSON_LOGS: _json_logs,
    Profile.TENSORS_F32: _tensors_f32,
    Profile.RANDOM: _random,
    Profile.MIXED: _mixed,
}


def synthetic_pool(profile: Profile, size: int = POOL_BYTES, seed: int = 5) -> bytes:
    """`size` bytes of the profile's data; the same seed gives the same bytes.

    Generating 4 MiB leaves about 7 MB of freed temporaries in the C heap, which glibc
    keeps unless asked (measured: a worker's RSS 56 -> 50 MB after the trim).
    """
    pool = _GENERATORS[profile](random.Random(seed), size)  # noqa: S311 (test data, not secrets)
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

    def __init__(self, pool: bytes, batch_bytes: int, start: int = 0) -> None:
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
    """A file, or every regular file under a directory, read batch by batch, forever."""

    def __init__(self, path: str, batch_bytes: int) -> None:
        self._files = [file for file in _regular_files(Path(path)) if file.stat().st_size > 0]
        if not self._files:
            raise ValueError(f"workload.path: {path!r} has no non-empty regular file to read")
        self._buffer = bytearray(batch_bytes)
        self._view = memoryview(self._buffer)
        self._batch = batch_bytes
        self._next_file = 0
        self._handle = self._open_next()

    def _open_next(self) -> BufferedReader:
        file = self._files[self._next_file]
        self._next_file = (self._next_file + 1) % len(self._files)
        return file.open("rb")

    def next_batch(self) -> memoryview:
        filled = 0
        empty_reads = 0
        while filled < self._batch:
            count = self._handle.readinto(self._view[filled:])
            if count:
                filled += count
                empty_reads = 0
                continue
            empty_reads += 1
            if empty_reads > len(self._files):
                raise ValueError("workload.path: every file became empty while reading")
            self._handle.close()
            self._handle = self._open_next()
        return self._view

    def close(self) -> None:
        self._handle.close()


def _regular_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(item for item in path.rglob("*") if item.is_file())


def open_source(workload: WorkloadSpec, pool: bytes | None, start: int = 0) -> BatchSource:
    """The batch source for one stream (each stream starts at its own offset)."""
    if workload.source == Source.FILE:
        return FileSource(workload.path, workload.batch_bytes)
    if pool is None:
        pool = synthetic_pool(workload.profile)
    return PoolSource(pool, workload.batch_bytes, start)
