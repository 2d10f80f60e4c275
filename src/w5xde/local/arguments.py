"""`w5xde local`'s command line, apart from the run: registering it must stay cheap.

Every `w5xde` command builds the whole parser, so `w5xde worker` registers these
arguments too; importing `w5xde.local.run` (rich, the results model) for them cost each
worker about 4 MB of its RSS (docs/PERFORMANCE.md, Memory).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of traffic, finite (default 30; Ctrl-C or SIGTERM ends a run early "
        "with the result marked Interrupted)",
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=65536,
        help="raw bytes per batch, 64..64 MiB (default 65536)",
    )
    parser.add_argument("--level", default="3", help="zstd level -7..22 or auto (default 3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="compression threads per worker, 0..64 (0: one per CPU; default 1)",
    )
    parser.add_argument("--codec", default="zstd", help="zstd | none (default zstd)")
    parser.add_argument(
        "--context",
        default="stream",
        help="stream (each connection keeps its compression history) | frame",
    )
    parser.add_argument(
        "--source", default="synthetic:mixed", help="synthetic:PROFILE or file:PATH"
    )
    parser.add_argument(
        "--topology", default="ring", help="ring | all-to-all | pairs | mesh (default ring)"
    )
    parser.add_argument(
        "--streams-per-peer", type=int, default=1, help="TCP streams per peer, 1..64 (default 1)"
    )
    parser.add_argument("--log-mode", default="silent", help="silent|normal|verbose or 1|2|3")
    parser.add_argument(
        "--socket-buffer",
        default=str(4 * 1024 * 1024),
        help="bytes 0..256 MiB, 0 = autotuning, auto = autotuning with a floor and a cap"
        " (default 4194304)",
    )
    parser.add_argument("--balance", default="even", help="even | capacity (default even)")
    parser.add_argument(
        "--chunk-bytes",
        type=int,
        default=65536,
        help="recv_into chunk, 4 KiB..16 MiB, at most --socket-buffer (default 65536)",
    )
    parser.add_argument("--rate-limit", type=int, default=0, help="bytes/s per worker, 0 = none")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on stdout (docs/results.md)",
    )
    parser.add_argument(
        "--json-stream",
        action="store_true",
        help="one JSON line per second on stdout: first the configuration, then the live "
        "figures, last the result (docs/results.md)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="N",
        help="make the run N times back to back; each is kept and the result summarizes "
        "them with a 95%% confidence interval (default 1)",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an expectation the run must meet, as in spec.expect (minThroughputBytesPerSecond, "
        "minCompressionRatio, maxLostBatches, maxCpuSecondsPerGb); exit 3 when one is missed",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mutual TLS between the workers, each with its own certificate from a CA made "
        "for the run (default on; --no-tls leaves only the key proof)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="draw throughput over time per worker and for the cluster, ratio and lost "
        "batches into a PNG (needs matplotlib: pip install 'w5xde[plot]')",
    )
