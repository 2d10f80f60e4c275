"""`compression.context`: ratio and codec speed of `stream` against `frame`, per window.

One core, no sockets: each batch compressed on its own (`frame`, as the worker does),
or through one compressor that keeps its history and flushes a block per batch
(`stream`, with the window the protocol allows and larger ones for comparison), then
decoded in order and checked.  Prints a table; `--json PATH` writes it.

    .venv/bin/python bench/bench_context.py                      # the bench's mixed pool
    .venv/bin/python bench/bench_context.py --file corpus.bin    # your own data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import zstandard

from w5xde.api.v1alpha1 import Profile
from w5xde.worker.protocol import STREAM_WINDOW_LOG
from w5xde.worker.sources import PoolSource, synthetic_pool


def measure(
    pool: bytes | bytearray, batch: int, level: int, window_log: int | None, total: int
) -> Any:
    """(ratio, compress MB/s, decompress MB/s); window_log None = independent frames."""
    source = PoolSource(pool, batch)
    if window_log is None:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        decompressor = zstandard.ZstdDecompressor()
    else:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=window_log, write_checksum=0, write_content_size=0
        )
        stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
        decoder = zstandard.ZstdDecompressor(max_window_size=1 << window_log).decompressobj()
    raw = out = 0
    compress_s = decompress_s = 0.0
    while raw < total:
        data = source.next_batch()
        began = time.perf_counter()
        if window_log is None:
            payload = compressor.compress(data)
        else:
            payload = stream.compress(data) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        middle = time.perf_counter()
        if window_log is None:
            decoded = decompressor.decompress(payload, max_output_size=len(data))
        else:
            decoded = decoder.decompress(payload)
        decompress_s += time.perf_counter() - middle
        compress_s += middle - began
        assert decoded == data
        raw += len(data)
        out += len(payload)
    return {
        "ratio": round(raw / out, 3),
        "compress_mb_s": round(raw / compress_s / 1e6, 1),
        "decompress_mb_s": round(raw / decompress_s / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", help="data to use instead of the synthetic mixed pool")
    parser.add_argument("--megabytes", type=int, default=32, help="raw data per row")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    pool = Path(args.file).read_bytes() if args.file else synthetic_pool(Profile.MIXED)
    rows = []
    for batch in (65536, 3600):
        for level in (1, 3, 6):
            for window in (None, STREAM_WINDOW_LOG, 20):
                total = args.megabytes * 1024 * 1024 // (4 if batch < 10000 else 1)
                row = {
                    "batch_bytes": batch,
                    "level": level,
                    "context": "frame" if window is None else "stream",
                    "window_log": window,
                    **measure(pool, batch, level, window, total),
                }
                rows.append(row)
                print(
                    f"{batch:>6} L{level} {row['context']:6} w={window or '-':>2}  ratio "
                    f"{row['ratio']:.3f}  compress {row['compress_mb_s']:6.1f} MB/s  "
                    f"decompress {row['decompress_mb_s']:6.1f} MB/s",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "data": args.file or "synthetic:mixed",
                    "load_average_at_end": os.getloadavg(),
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
