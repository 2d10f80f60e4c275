"""The 2-worker pair, TLS on/off, this tree against a git ref, `stream` against `frame`.

Every row runs `--repeat` times, all rows alternating within each round, so background
load on a shared machine hits every row alike; prints each run, then the median and the
spread (min-max) per row, and the 1-minute load seen during the run.

    .venv/bin/python bench/bench_pair_ab.py --seconds 5 --repeat 3 --baseline main
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--sizes", default="65536,3600")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    base = bench_worker.baseline_tree(args.baseline)
    variants = [
        ("new", True, None),
        ("new", False, None),
        ("old", True, None),
        ("old", False, None),
        ("new", True, "frame"),
    ]
    results: dict[str, list[dict[str, float]]] = {}
    loads = []
    for _ in range(args.repeat):
        for size in (int(value) for value in args.sizes.split(",")):
            for code, tls, context in variants:
                row = bench_worker.w5xde_pair(
                    seconds=args.seconds,
                    batch_bytes=size,
                    level=args.level,
                    tls=tls,
                    context=context,
                    baseline_src=base if code == "old" else None,
                )
                key = f"{size} {code} tls={'on' if tls else 'off'}" + (
                    f" context={context}" if context else ""
                )
                results.setdefault(key, []).append(
                    {
                        "raw_mb_s": row.raw_mb_s,
                        "batches_per_s": row.batches_per_s,
                        "ratio": row.ratio,
                        "rss_mb": row.rss_mb_max,
                    }
                )
                loads.append(os.getloadavg()[0])
                print(f"{key:32} {row.raw_mb_s:7.1f} MB/s {row.batches_per_s:8.0f} b/s", flush=True)
    print(f"1-minute load during the run: {min(loads):.1f}-{max(loads):.1f}")
    for key, runs in results.items():
        rates = [run["raw_mb_s"] for run in runs]
        print(
            f"{key:32} median {statistics.median(rates):7.1f} MB/s [{min(rates):.1f}-"
            f"{max(rates):.1f}]  {statistics.median(r['batches_per_s'] for r in runs):8.0f} b/s"
            f"  ratio {runs[0]['ratio']:.2f}  peak RSS {max(r['rss_mb'] for r in runs):.1f} MB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"loads": loads, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
