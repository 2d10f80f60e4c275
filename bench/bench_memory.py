"""Where a worker's memory goes, and what it comes to at the defaults (issue 21).

Three measurements, all of real processes on this machine:

* **components**: a fresh interpreter takes the worker's parts one by one (imports,
  the synthetic pool, TLS contexts, compressors and decoders, 16 of each for the "per"
  rows) and reads its RSS after `gc` and `malloc_trim` after each step;
* **pair**: `w5xde local --workers 2` at the defaults (TLS on, level 3, `stream`) for
  64 KiB and 3.6 KB batches from the synthetic pool and from a file corpus, the
  workers' peak RSS (`VmHWM`); then the same with one worker stopped (SIGSTOP) for 5 s,
  so the other's replay window fills to its budget: the worst case a stalled peer makes;
* **idle peers**: all-to-all clusters of 2, 6 and 10 workers at 1 MB/s each, the mean
  peak RSS per worker against its peer count: the slope is what one more peer (one
  outgoing and one incoming TLS `stream` connection) costs.

    .venv/bin/python bench/bench_memory.py --json bench/memory-results.json

`bench/render_docs.py` renders the tables in docs/PERFORMANCE.md from that JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 64.0
#: Of each per-connection part, this many are made and the average is reported.
PER = 16
CORPUS_PART_BYTES = 6 * 1024 * 1024
BATCHES = (65536, 3600)
IDLE_WORKERS = (2, 6, 10)
IDLE_RATE = 1_000_000


def _rss_mb() -> float:
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def component_steps() -> list[dict[str, Any]]:
    """Run in a fresh interpreter (`--components`): each step's RSS growth."""
    steps: list[dict[str, Any]] = []
    kept: list[Any] = []
    last = _rss_mb()
    steps.append({"component": "interpreter (nothing imported)", "mb": round(last, 2)})

    def step(name: str, action: Callable[[], Any], count: int = 1) -> None:
        nonlocal last
        kept.append(action())
        now = _rss_mb()
        steps.append({"component": name, "mb": round((now - last) / count, 2), "per": count > 1})
        last = now

    step("OpenSSL (ssl, hashlib)", lambda: (__import__("ssl"), __import__("hashlib")))
    step("zstandard", lambda: __import__("zstandard"))
    step("pydantic and the API models", lambda: __import__("w5xde.api.v1alpha1"))
    step(
        "the worker's own modules (runtime, protocol, cryptography for certificates)",
        lambda: (__import__("w5xde.worker.process"), __import__("w5xde.contract.certificates")),
    )
    step(
        "metrics and report endpoint (prometheus-client)",
        lambda: (__import__("w5xde.worker.metrics"), __import__("w5xde.worker.report_endpoint")),
    )
    from w5xde.api.v1alpha1 import CompressionSpec, Profile
    from w5xde.contract import certificates
    from w5xde.worker.codec import BatchCompressor, StreamDecompressor
    from w5xde.worker.protocol import CodecId
    from w5xde.worker.sources import PoolSource, synthetic_pool
    from w5xde.worker.tls import build_contexts

    pool = synthetic_pool(Profile.MIXED)
    kept.append(pool)
    now = _rss_mb()
    steps.append({"component": "synthetic pool (4 MiB, shared by all streams)",
                  "mb": round(now - last, 2), "per": False})  # fmt: skip
    last = now

    def contexts() -> Any:
        authority = certificates.new_authority("bench")
        certificate, key = certificates.issue(authority, "bench-0")
        return build_contexts(certificate, key, authority.certificate_pem)

    step("TLS identity and contexts", contexts)
    batch = PoolSource(pool, 65536).next_batch()

    def compressors(level: int, stream: bool) -> list[Any]:
        made = []
        for _ in range(PER):
            compressor = BatchCompressor(
                CompressionSpec(level=level, context="stream" if stream else "frame"),
                stream=stream,
            )
            compressor.new_connection(tls=True)
            compressor.compress_frame(batch)
            made.append(compressor)
        return made

    step("per stream: level-3 `stream` compressor", lambda: compressors(3, True), PER)
    step("per stream: level-1 `stream` compressor", lambda: compressors(1, True), PER)
    step("per stream: level-3 `frame` compressor", lambda: compressors(3, False), PER)
    source = BatchCompressor(CompressionSpec(level=3, context="stream"), stream=True)
    source.new_connection(tls=False)
    payload, crc, codec, _ = source.compress_frame(batch)

    def decoders() -> list[Any]:
        made = []
        for _ in range(PER):
            decoder = StreamDecompressor()
            decoder.decompress(CodecId(codec), memoryview(bytes(payload)), len(batch), crc)
            made.append(decoder)
        return made

    step("per incoming `stream` connection: zstd decoder with its window", decoders, PER)
    return steps


def _components() -> list[dict[str, Any]]:
    python = str(ROOT / ".venv" / "bin" / "python")
    done = subprocess.run(
        [python, __file__, "--components"], capture_output=True, text=True, check=True
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


@contextmanager
def corpus() -> Iterator[Path]:
    """A file corpus any machine with this venv has: the standard library's Python
    sources and the venv's shared libraries, about 6 MB of each, in a sorted order."""
    with tempfile.TemporaryDirectory(prefix="w5xde-corpus-") as directory:
        root = Path(directory)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        sites = ROOT / ".venv" / "lib"
        for kind, files in (
            ("py", sorted(stdlib.glob("*.py"))),
            ("so", sorted(sites.rglob("*.so"))),
        ):
            total = 0
            for number, file in enumerate(files):
                if total >= CORPUS_PART_BYTES:
                    break
                shutil.copyfile(file, root / f"{kind}-{number:05d}")
                total += file.stat().st_size
        yield root


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(parent):
            found.append(int(entry.name))
    return sorted(found)


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _local(args: list[str], tree: str | None = None) -> subprocess.Popen[str]:
    """`w5xde local` of this tree, or of `tree` (an unpacked baseline: PYTHONPATH)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.path.join(tree, "src")
    return subprocess.Popen(
        [sys.executable, "-m", "w5xde", "local", "--json", "--log-mode", "silent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _peaks(run: subprocess.Popen[str]) -> list[float]:
    out, _ = run.communicate(timeout=120)
    result = json.loads(out)
    lost = result["figures"]["lostBatches"]
    if lost:
        raise RuntimeError(f"a memory run lost {lost} batches")
    return [worker["rssMaxBytes"] / 1e6 for worker in result["workers"]]


def pair(batch: int, source: str, level: str, *, stall: bool, tree: str | None = None) -> float:
    """The pair's peak RSS per worker (MB); with `stall`, the running worker's peak while
    its peer is stopped (the replay window full)."""
    run = _local(["--workers", "2", "--duration", "14" if stall else "8", "--level", level,
                  "--batch-bytes", str(batch), "--source", source], tree)  # fmt: skip
    if not stall:
        return max(_peaks(run))
    time.sleep(5)
    workers = _children(run.pid)
    if len(workers) != 2:
        run.kill()
        raise RuntimeError(f"expected 2 worker processes, found {workers}")
    stopped, running = workers
    os.kill(stopped, signal.SIGSTOP)
    try:
        time.sleep(5)
        peak = _hwm_mb(running) * 1024 * 1024 / 1e6
    finally:
        os.kill(stopped, signal.SIGCONT)
    _peaks(run)
    return peak


def idle_peers() -> dict[str, Any]:
    """Mean peak RSS per worker of all-to-all clusters at a trickle, and its slope."""
    means = []
    for workers in IDLE_WORKERS:
        run = _local(["--workers", str(workers), "--duration", "8", "--topology", "all-to-all",
                      "--rate-limit", str(IDLE_RATE)])  # fmt: skip
        peaks = _peaks(run)
        means.append(sum(peaks) / len(peaks))
    peers = [workers - 1 for workers in IDLE_WORKERS]
    mean_x, mean_y = sum(peers) / len(peers), sum(means) / len(means)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(peers, means, strict=True)) / sum(
        (x - mean_x) ** 2 for x in peers
    )
    return {
        "workers": list(IDLE_WORKERS),
        "rate_bytes_per_s_per_worker": IDLE_RATE,
        "rss_mb_per_worker": [round(value, 1) for value in means],
        "per_peer_mb": round(slope, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/memory-results.json")
    parser.add_argument("--components", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline", help="a git ref whose pair rows are measured too, alternating (old vs new)"
    )
    args = parser.parse_args()
    if args.components:
        print(json.dumps(component_steps()))
        return 0
    started = time.monotonic()
    # Imported here: the `--components` child must not carry bench_worker's imports.
    import bench_worker  # bench/bench_worker.py (the script's directory is on sys.path)

    old = bench_worker.baseline_tree(args.baseline) if args.baseline else None
    components = _components()
    rows: list[dict[str, Any]] = []
    with corpus() as files:
        sources = {"synthetic": "synthetic:mixed", "file": f"file:{files}"}
        cases = [(batch, name, "3") for batch in BATCHES for name in sources]
        # `level: auto` probes every level of its ladder in every stream.
        cases.append((BATCHES[0], "synthetic", "auto"))
        for batch, name, level in cases:
            source = sources[name]
            row: dict[str, Any] = {"batch_bytes": batch, "source": name, "level": level}
            if old is not None:
                peak = pair(batch, source, level, stall=False, tree=old)
                row["baseline_peak_rss_mb"] = round(peak, 1)
            row["peak_rss_mb"] = round(pair(batch, source, level, stall=False), 1)
            if old is not None:
                stalled = pair(batch, source, level, stall=True, tree=old)
                row["baseline_stalled_peer_peak_rss_mb"] = round(stalled, 1)
            row["stalled_peer_peak_rss_mb"] = round(pair(batch, source, level, stall=True), 1)
            rows.append(row)
            print(row, flush=True)
    idle = idle_peers()
    # The target is at the defaults (level 3); the `auto` row is shown, not judged.
    worst: float = max(
        max(float(row["peak_rss_mb"]), float(row["stalled_peer_peak_rss_mb"]))
        for row in rows
        if row["level"] == "3"
    )
    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "defaults": "2 workers, TLS on, context stream, 64 KiB or 3.6 KB batches",
        "components": components,
        "pair": rows,
        "idle_peers": idle,
        "targets": {
            "rss_mb": TARGET_MB,
            "worst_peak_rss_mb": round(worst, 1),
            "met": worst <= TARGET_MB,
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if args.baseline:
        document["baseline"] = {"ref": args.baseline, "rows": "baseline_* keys of each pair row"}
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    for component in components:
        print(f"{component['component']:<78} {component['mb']:>7.2f} MB")
    print(json.dumps(idle))
    verdict = "met" if worst <= TARGET_MB else "missed"
    print(f"worst peak {worst:.1f} MB against {TARGET_MB:.0f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
