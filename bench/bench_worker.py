"""The worker benchmark: w5xde pairs against `zstd -1 | nc` and the in-process codec ceiling.

Everything runs in one go on the same data (the `mixed` synthetic pool), so the
figures are comparable: prints a table and writes JSON (`--json PATH`).

    .venv/bin/python bench/bench_worker.py --duration 6 --json bench/results.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import local_json  # bench/local_json.py (the script's directory is on sys.path)
import zstandard

from w5xde.api.v1alpha1 import Profile
from w5xde.worker.sources import PoolSource, synthetic_pool

MIB = 1024 * 1024
SEED_BATCH = 3600


@dataclass
class Row:
    """One measured configuration."""

    name: str
    kind: str
    batch_bytes: int = 0
    level: int = 0
    log_mode: str = "silent"
    socket_buffer: int = 4 * MIB
    raw_mb_s: float = 0.0
    wire_mb_s: float = 0.0
    batches_per_s: float = 0.0
    ratio: float = 0.0
    network_s_per_worker: float = 0.0
    compression_s_per_worker: float = 0.0
    rss_mb_max: float = 0.0
    lost: int = 0
    corrupt: int = 0
    resent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def codec_ceiling(pool: bytes | bytearray, batch_bytes: int, level: int, seconds: float) -> Row:
    """One core compressing then verifying+decompressing, no sockets: the upper bound per core."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    decompressor = zstandard.ZstdDecompressor()
    source = PoolSource(pool, batch_bytes)
    raw = wire = batches = 0
    compress_s = 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = source.next_batch()
        began = time.perf_counter()
        payload = compressor.compress(batch)
        compress_s += time.perf_counter() - began
        decompressor.decompress(payload, max_output_size=len(batch))
        raw += len(batch)
        wire += len(payload)
        batches += 1
    elapsed = time.perf_counter() - started
    return Row(
        name=f"codec ceiling L{level} {_size(batch_bytes)}",
        kind="codec",
        batch_bytes=batch_bytes,
        level=level,
        raw_mb_s=raw / elapsed / 1e6,
        wire_mb_s=wire / elapsed / 1e6,
        batches_per_s=batches / elapsed,
        ratio=raw / wire,
        compression_s_per_worker=elapsed,
        extra={"compress_only_mb_s": raw / compress_s / 1e6},
    )


def _free_port() -> int:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port: int = holder.getsockname()[1]
        return port


def zstd_nc_pipeline(pool: bytes | bytearray, seconds: float, level: int = 1) -> Row:
    """`cat pool... | zstd -1 | nc` -> `nc -l | zstd -d` on loopback, measured after a warm-up.

    Every stage is a direct child (so all are reaped); the feed is `cat` over the pool
    file named many times, so no Python sits in the sender's path.
    """
    port = _free_port()
    with tempfile.NamedTemporaryFile(prefix="w5xde-bench-", suffix=".bin") as pool_file:
        pool_file.write(pool)
        pool_file.flush()
        listen = subprocess.Popen(["nc", "-l", "127.0.0.1", str(port)], stdout=subprocess.PIPE)
        unpack = subprocess.Popen(
            ["zstd", "-d", "-c", "-q"], stdin=listen.stdout, stdout=subprocess.PIPE
        )
        assert listen.stdout is not None
        listen.stdout.close()
        received = 0

        def count() -> None:
            nonlocal received
            assert unpack.stdout is not None
            while chunk := cast("io.BufferedReader", unpack.stdout).read1(MIB):
                received += len(chunk)

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        time.sleep(0.3)
        feed = subprocess.Popen(["cat", *[pool_file.name] * 4000], stdout=subprocess.PIPE)
        pack = subprocess.Popen(
            ["zstd", f"-{level}", "-c", "-q"], stdin=feed.stdout, stdout=subprocess.PIPE
        )
        send = subprocess.Popen(
            ["nc", "127.0.0.1", str(port)], stdin=pack.stdout, stderr=subprocess.DEVNULL
        )
        assert feed.stdout is not None
        assert pack.stdout is not None
        feed.stdout.close()
        pack.stdout.close()
        time.sleep(1.0)
        first, started = received, time.monotonic()
        time.sleep(seconds)
        last, elapsed = received, time.monotonic() - started
        for process in (feed, pack, send, listen, unpack):
            process.kill()
            process.wait()
        counter.join(5)
    ratio = len(pool) / len(zstandard.ZstdCompressor(level=level).compress(pool))
    raw_rate = (last - first) / elapsed
    return Row(
        name=f"zstd -{level} | nc -> nc | zstd -d",
        kind="pipeline",
        level=level,
        raw_mb_s=raw_rate / 1e6,
        wire_mb_s=raw_rate / ratio / 1e6,
        ratio=ratio,
        extra={"note": "one stream, after 1 s warm-up; ratio of the pool as one zstd stream"},
    )


def iperf3_loopback(seconds: float) -> Row | None:
    """Raw TCP on loopback, no compression: what the socket path alone allows."""
    if shutil.which("iperf3") is None:
        return None
    port = str(_free_port())
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-p", port, "-B", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        result = subprocess.run(
            ["iperf3", "-c", "127.0.0.1", "-p", port, "-t", str(max(1, int(seconds))), "-J"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
    finally:
        server.wait(timeout=30)
    if result.returncode != 0:
        return None
    bits = json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"]
    return Row(name="iperf3 TCP loopback (no codec)", kind="iperf3", raw_mb_s=bits / 8 / 1e6)


def w5xde_pair(
    *,
    seconds: float,
    batch_bytes: int,
    level: int,
    log_mode: str = "silent",
    socket_buffer: int = 4 * MIB,
    workers: int = 2,
    threads: int = 1,
    baseline_src: str | None = None,
    tls: bool = True,
    context: str | None = None,
    source: str = "synthetic:mixed",
) -> Row:
    """`w5xde local` with the given knobs; its --json output becomes one row.

    With `baseline_src` the run uses that tree's code (PYTHONPATH=<tree>/src) instead.
    """
    env = dict(os.environ)
    if baseline_src is not None:
        env["PYTHONPATH"] = os.path.join(baseline_src, "src")
    command = [
        sys.executable, "-m", "w5xde", "local",
        "--workers", str(workers),
        "--duration", str(seconds),
        "--batch-bytes", str(batch_bytes),
        "--level", str(level),
        "--log-mode", log_mode,
        "--socket-buffer", str(socket_buffer),
        "--threads", str(threads),
        "--source", source,
        "--json",
    ]  # fmt: skip
    if not tls:  # (a baseline from before TLS has no such option, and no TLS)
        command.append("--no-tls")
    if context is not None:  # (a baseline from before issue 21 has only frames)
        command += ["--context", context]
    result = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=seconds + 60,
        check=True,
        env=env,
    )
    data = local_json.flat(json.loads(result.stdout))
    return Row(
        name=f"w5xde x{workers} L{level} {_size(batch_bytes)} {log_mode} "
        f"buf={_size(socket_buffer)}"
        + (f" threads={threads}" if threads != 1 else "")
        + ("" if tls else " tls=off")
        + (f" context={context}" if context is not None else "")
        + (" [baseline]" if baseline_src is not None else ""),
        kind="w5xde" if baseline_src is None else "w5xde-baseline",
        batch_bytes=batch_bytes,
        level=level,
        log_mode=log_mode,
        socket_buffer=socket_buffer,
        raw_mb_s=data["throughput_bytes_per_s"] / 1e6,
        wire_mb_s=data["wire_bytes_per_s"] / 1e6,
        batches_per_s=data["batches_per_s"],
        ratio=data["compression_ratio"],
        network_s_per_worker=data["network_seconds_per_worker"],
        compression_s_per_worker=data["compression_seconds_per_worker"],
        rss_mb_max=data["rss_bytes_max"] / 1e6,
        lost=data["lost_batches"],
        corrupt=data["corrupt_batches"],
        resent=data["resent_batches"],
        extra={
            "duration_s": data["duration_s"],
            "workers": workers,
            "threads": threads,
            "tls": tls,
            "context": context or ("frame" if baseline_src is not None else "stream"),
            "source": source,
        },
    )


def median_row(runs: list[Row]) -> Row:
    """The run with the median raw MB/s; every run's figure is kept in `extra`."""
    ordered = sorted(runs, key=lambda row: row.raw_mb_s)
    chosen = ordered[len(ordered) // 2]
    chosen.extra["runs_raw_mb_s"] = [round(row.raw_mb_s, 1) for row in runs]
    if len(runs) > 1:
        chosen.name += f" (median of {len(runs)})"
    return chosen


#: Old-vs-new figures (`BENCH_BASELINE`): name, how to read it off a row, higher is better.
BASELINE_FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("pair L1 64 KiB raw MB/s", "pair:raw_mb_s", True),
    ("3.6 KB L3 batches/s", "small:batches_per_s", True),
    ("pair RSS MB per worker", "pair:rss_mb_max", False),
)


def verdicts(new: dict[str, list[Row]], old: dict[str, list[Row]]) -> list[dict[str, Any]]:
    """Per figure: old and new runs (alternating in one session), each mean ± 95 % CI
    (Student's t), and a verdict that calls a change only outside both intervals."""
    from w5xde.contract.results import FigureSummary, interval_overlap_slower
    from w5xde.contract.statistics import SampleStats

    def summary(values: list[float]) -> FigureSummary:
        stats = SampleStats()
        for value in values:
            stats = stats.add(value)
        return FigureSummary(
            mean=round(stats.mean, 1),
            ci95=round(stats.ci95, 1),
            min=round(stats.min, 1),
            max=round(stats.max, 1),
            samples=stats.count,
        )

    out = []
    for name, key, higher_is_better in BASELINE_FIGURES:
        side, attribute = key.split(":")
        new_values = [float(getattr(row, attribute)) for row in new[side]]
        old_values = [float(getattr(row, attribute)) for row in old[side]]
        if not new_values or not old_values:
            continue
        a, b = summary(old_values), summary(new_values)
        worse = (
            interval_overlap_slower(a, b, 0.0)
            if higher_is_better
            else interval_overlap_slower(b, a, 0.0)
        )
        better = (
            interval_overlap_slower(b, a, 0.0)
            if higher_is_better
            else interval_overlap_slower(a, b, 0.0)
        )
        verdict = "worse" if worse else "better" if better else "no clear difference"
        out.append(
            {
                "figure": name,
                "old": a.model_dump(by_alias=True),
                "new": b.model_dump(by_alias=True),
                "verdict": verdict,
            }
        )
    return out


def format_verdicts(items: list[dict[str, Any]], ref: str) -> str:
    lines = [f"old ({ref}) vs new, alternating in this run (mean ± 95 % CI):"]
    for item in items:
        old, new = item["old"], item["new"]
        lines.append(
            f"  {item['figure']:<26} old {old['mean']:>10,.1f} ± {old['ci95']:<8,.1f}"
            f" new {new['mean']:>10,.1f} ± {new['ci95']:<8,.1f} -> {item['verdict']}"
        )
    return "\n".join(lines)


def _size(value: int) -> str:
    if value == 0:
        return "0"
    if value % MIB == 0:
        return f"{value // MIB}MiB"
    if value % 1024 == 0:
        return f"{value // 1024}KiB"
    return f"{value / 1000:.1f}KB"


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'configuration':<58} {'raw MB/s':>9} {'wire MB/s':>9} {'batches/s':>10} "
        f"{'ratio':>6} {'net s':>6} {'comp s':>6} {'RSS MB':>7} {'lost':>4} {'resent':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.name:<58} {row.raw_mb_s:9.1f} {row.wire_mb_s:9.1f} {row.batches_per_s:10.0f} "
            f"{row.ratio:6.2f} {row.network_s_per_worker:6.2f} {row.compression_s_per_worker:6.2f} "
            f"{row.rss_mb_max:7.1f} {row.lost:4d} {row.resent:6d}"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> dict[str, Any]:
    """The issue's targets, checked against this run."""

    def find(**match: Any) -> Row:
        return next(
            row
            for row in rows
            if row.kind == "w5xde"
            and row.extra.get("threads", 1) == 1
            and all(getattr(row, k) == v for k, v in match.items())
        )

    pipeline = next(row for row in rows if row.kind == "pipeline")
    pair = find(batch_bytes=64 * 1024, level=1, log_mode="silent", socket_buffer=4 * MIB)
    small = find(batch_bytes=SEED_BATCH, level=3)
    default = find(batch_bytes=64 * 1024, level=3, log_mode="silent", socket_buffer=4 * MIB)
    return {
        "pair_vs_zstd_nc": {
            "w5xde_raw_mb_s": round(pair.raw_mb_s, 1),
            "zstd_nc_raw_mb_s": round(pipeline.raw_mb_s, 1),
            "factor": round(pair.raw_mb_s / pipeline.raw_mb_s, 2),
            "target": 1.3,
        },
        "small_batches_per_s": {"value": round(small.batches_per_s), "target": 20000},
        "rss_mb_per_worker_default": {"value": round(default.rss_mb_max, 1), "target": 80},
    }


def baseline_tree(ref: str) -> str:
    """The tree of git `ref` (e.g. main, a commit) unpacked into a temporary directory."""
    target = tempfile.mkdtemp(prefix="w5xde-baseline-")
    archive = subprocess.run(["git", "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def scale_section(seconds: float, baseline_src: str | None) -> dict[str, Any]:
    """Per-worker RSS and threads at scale (bench/bench_scale.py), old and new side by side."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_scale

    rows = []
    for topology, workers in (("all-to-all", 24), ("mesh", 48)):
        runs: list[tuple[str, str | None]] = [("new", None)]
        if baseline_src is not None and topology != "mesh":
            runs.insert(0, ("old", baseline_src))
        for code, src in runs:
            row = bench_scale.measure(
                topology, workers, seconds=seconds, code=code, baseline_src=src
            )
            rows.append(row)
            print(bench_scale.format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    print()
    print(bench_scale.format_table(rows))
    return {
        "rows": [asdict(row) for row in rows],
        "targets": bench_scale.check_targets(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--json", default="bench/results.json", help="where to write results")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="alternating runs of the target comparison (median kept; the machine is shared)",
    )
    parser.add_argument(
        "--baseline",
        default=os.environ.get("BENCH_BASELINE", ""),
        help="a git ref (e.g. main) whose code runs the headline pair and the scale rows too,"
        " alternating with this tree's (env BENCH_BASELINE)",
    )
    parser.add_argument(
        "--no-scale", action="store_true", help="skip the per-worker RSS/threads rows at scale"
    )
    args = parser.parse_args()
    baseline_src = baseline_tree(args.baseline) if args.baseline else None
    # Generated before any measurement, exactly as the workers do before they stream.
    pool = synthetic_pool(Profile.MIXED)
    rows: list[Row] = []

    def add(row: Row | None) -> None:
        if row is not None:
            rows.append(row)
            print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)

    # The headline comparison alternates its two sides so background load hits both alike.
    pipelines, pairs, old_pairs, plain_pairs = [], [], [], []
    new_small: list[Row] = []
    old_small: list[Row] = []
    small_pairs, small_plain_pairs = [], []
    for _ in range(max(1, args.repeat)):
        pipelines.append(zstd_nc_pipeline(pool, args.duration, level=1))
        pairs.append(w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=1))
        plain_pairs.append(
            w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=1, tls=False)
        )
        small_pairs.append(w5xde_pair(seconds=args.duration, batch_bytes=SEED_BATCH, level=1))
        small_plain_pairs.append(
            w5xde_pair(seconds=args.duration, batch_bytes=SEED_BATCH, level=1, tls=False)
        )
        if baseline_src is not None:
            old_pairs.append(
                w5xde_pair(
                    seconds=args.duration,
                    batch_bytes=64 * 1024,
                    level=1,
                    baseline_src=baseline_src,
                )
            )
            new_small.append(w5xde_pair(seconds=args.duration, batch_bytes=SEED_BATCH, level=3))
            old_small.append(
                w5xde_pair(
                    seconds=args.duration,
                    batch_bytes=SEED_BATCH,
                    level=3,
                    baseline_src=baseline_src,
                )
            )
    add(median_row(pipelines))
    new_pair = median_row(pairs)
    add(new_pair)
    plain_pair = median_row(plain_pairs)
    add(plain_pair)
    tls_cost = {
        "tls_on_raw_mb_s": round(new_pair.raw_mb_s, 1),
        "tls_off_raw_mb_s": round(plain_pair.raw_mb_s, 1),
        "tls_on_over_off": round(new_pair.raw_mb_s / plain_pair.raw_mb_s, 3),
        "runs_tls_on": new_pair.extra["runs_raw_mb_s"],
        "runs_tls_off": plain_pair.extra["runs_raw_mb_s"],
        "target": 0.9,
    }
    tls_cost["met"] = tls_cost["tls_on_over_off"] >= tls_cost["target"]
    judged = (
        verdicts({"pair": pairs, "small": new_small}, {"pair": old_pairs, "small": old_small})
        if old_pairs
        else []
    )
    small_on, small_off = median_row(small_pairs), median_row(small_plain_pairs)
    add(small_on)
    add(small_off)
    tls_cost["small_batches"] = {
        "batch_bytes": SEED_BATCH,
        "tls_on_batches_per_s": round(small_on.batches_per_s),
        "tls_off_batches_per_s": round(small_off.batches_per_s),
        "tls_on_over_off": round(small_on.raw_mb_s / small_off.raw_mb_s, 3),
        "runs_tls_on": small_on.extra["runs_raw_mb_s"],
        "runs_tls_off": small_off.extra["runs_raw_mb_s"],
        "target": 0.8,
    }
    tls_cost["small_batches"]["met"] = tls_cost["small_batches"]["tls_on_over_off"] >= 0.8
    old_pair = median_row(old_pairs) if old_pairs else None
    add(old_pair)
    for batch in (SEED_BATCH, 64 * 1024, MIB):
        for level in (1, 3):
            add(codec_ceiling(pool, batch, level, min(args.duration, 3.0)))
    for batch in (SEED_BATCH, 64 * 1024, MIB):
        for level in (1, 3):
            if (batch, level) != (64 * 1024, 1):
                add(w5xde_pair(seconds=args.duration, batch_bytes=batch, level=level))
    add(w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=1, log_mode="verbose"))
    add(w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=1, socket_buffer=0))
    add(w5xde_pair(seconds=args.duration, batch_bytes=SEED_BATCH, level=1, log_mode="verbose"))
    add(w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=3, threads=2))
    # `make run`'s defaults (4 workers, level 3, TLS on): README's row for it.
    add(w5xde_pair(seconds=args.duration, batch_bytes=64 * 1024, level=3, workers=4))
    add(iperf3_loopback(min(args.duration, 3.0)))
    checked = targets(rows)
    scale = None if args.no_scale else scale_section(args.duration, baseline_src)
    print()
    print(format_table(rows))
    print()
    print(json.dumps(checked, indent=2))
    print(json.dumps({"tls": tls_cost}, indent=2))
    comparison = None
    if old_pair is not None:
        comparison = {
            "ref": args.baseline,
            "pair_raw_mb_s_new": round(new_pair.raw_mb_s, 1),
            "pair_raw_mb_s_baseline": round(old_pair.raw_mb_s, 1),
            "new_over_baseline": round(new_pair.raw_mb_s / old_pair.raw_mb_s, 3),
            "runs_new": new_pair.extra["runs_raw_mb_s"],
            "runs_baseline": old_pair.extra["runs_raw_mb_s"],
            "verdicts": judged,
        }
        print(json.dumps({"baseline": comparison}, indent=2))
        print(format_verdicts(judged, args.baseline))
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "zstandard": zstandard.__version__,
            "kernel": platform.release(),
            "load_average_at_end": os.getloadavg(),
        },
        "duration_per_run_s": args.duration,
        "rows": [asdict(row) for row in rows],
        "targets": checked,
        "tls": tls_cost,
    }
    if comparison is not None:
        result["baseline"] = comparison
    if scale is not None:
        result["scale"] = scale
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
