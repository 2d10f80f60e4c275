"""Per-worker cost at scale: `w5xde local` with many workers, threads and RSS sampled per worker.

Each configuration runs `w5xde local --json` and, while it runs, reads
`/proc/<pid>/status` of every worker process (the children of the `w5xde local`
process) a few times per second: the largest thread count and the largest VmHWM
(peak RSS) of any worker are kept, next to the run's own figures.

With `--baseline-src DIR` every configuration the old code can run is measured with
that tree too (`PYTHONPATH=DIR/src`), alternating old and new so background load
hits both alike:

    git archive <commit> | tar -x -C /tmp/w5xde-old
    .venv/bin/python bench/bench_scale.py --baseline-src /tmp/w5xde-old --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import local_json  # bench/local_json.py (the script's directory is on sys.path)

#: (topology, workers): the issue's targets and the figures of its table.
CONFIGURATIONS: list[tuple[str, int]] = [
    ("ring", 8),
    ("ring", 24),
    ("all-to-all", 8),
    ("all-to-all", 24),
    ("mesh", 24),
    ("mesh", 48),
]
TARGETS = {
    ("mesh", 48): {"rss_mb_per_worker": 80.0, "threads_per_worker": 24},
    ("all-to-all", 24): {"rss_mb_per_worker": 100.0},
}


@dataclass
class ScaleRow:
    """One `w5xde local` run with its per-worker maxima."""

    code: str
    topology: str
    workers: int
    raw_mb_s: float = 0.0
    rss_mb_max: float = 0.0
    threads_max: int = 0
    lost: int = 0
    corrupt: int = 0
    resent: int = 0
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _status(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def measure(
    topology: str,
    workers: int,
    *,
    seconds: float,
    code: str,
    baseline_src: str | None,
    batch_bytes: int = 65536,
    level: int = 1,
    threads: int = 1,
) -> ScaleRow:
    env = dict(os.environ)
    if baseline_src is not None:
        env["PYTHONPATH"] = str(Path(baseline_src) / "src")
    command = [
        sys.executable, "-m", "w5xde", "local",
        "--workers", str(workers),
        "--duration", str(seconds),
        "--topology", topology,
        "--batch-bytes", str(batch_bytes),
        "--level", str(level),
        "--threads", str(threads),
        "--json",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    peak_threads = 0
    peak_hwm_kb = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_threads, peak_hwm_kb
        while not done.is_set():
            for child in _children(process.pid):
                status = _status(child)
                if "Threads" in status:
                    peak_threads = max(peak_threads, int(status["Threads"]))
                if "VmHWM" in status:
                    peak_hwm_kb = max(peak_hwm_kb, int(status["VmHWM"].split()[0]))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate(timeout=seconds + 120)
    done.set()
    sampler.join()
    data = local_json.flat(json.loads(out))
    nodes = data.get("nodes", [])
    return ScaleRow(
        code=code,
        topology=topology,
        workers=workers,
        raw_mb_s=data["throughput_bytes_per_s"] / 1e6,
        rss_mb_max=max(data["rss_bytes_max"], peak_hwm_kb * 1024) / 1e6,
        threads_max=peak_threads,
        lost=data["lost_batches"],
        corrupt=data["corrupt_batches"],
        resent=data["resent_batches"],
        duplicates=sum(node.get("duplicate_batches", 0) for node in nodes),
        extra={"duration_s": data["duration_s"], "exit_code": process.returncode},
    )


def format_table(rows: list[ScaleRow]) -> str:
    header = (
        f"{'code':<5} {'topology':<11} {'workers':>7} {'raw MB/s':>9} {'RSS MB/worker':>14} "
        f"{'threads/worker':>15} {'lost':>5} {'resent':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.code:<5} {row.topology:<11} {row.workers:7d} {row.raw_mb_s:9.1f} "
            f"{row.rss_mb_max:14.1f} {row.threads_max:15d} {row.lost:5d} {row.resent:7d}"
        )
    return "\n".join(lines)


def check_targets(rows: list[ScaleRow]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for (topology, workers), target in TARGETS.items():
        row = next(
            (r for r in rows if r.code == "new" and (r.topology, r.workers) == (topology, workers)),
            None,
        )
        if row is None:
            continue
        result: dict[str, Any] = {"rss_mb_per_worker": round(row.rss_mb_max, 1)}
        result["rss_target"] = target["rss_mb_per_worker"]
        result["rss_met"] = row.rss_mb_max <= target["rss_mb_per_worker"]
        if "threads_per_worker" in target:
            result["threads_per_worker"] = row.threads_max
            result["threads_target"] = target["threads_per_worker"]
            result["threads_met"] = row.threads_max <= target["threads_per_worker"]
        checked[f"{topology}_{workers}"] = result
    return checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--json", default="", help="where to write results")
    parser.add_argument("--baseline-src", default=None, help="an older tree to compare with")
    parser.add_argument(
        "--only", default="", help="comma-separated topology:workers, e.g. mesh:48,all-to-all:24"
    )
    args = parser.parse_args()
    configurations = CONFIGURATIONS
    if args.only:
        configurations = [
            (item.split(":")[0], int(item.split(":")[1])) for item in args.only.split(",")
        ]
    rows: list[ScaleRow] = []
    for topology, workers in configurations:
        runs = [("new", None)]
        if args.baseline_src and topology != "mesh":
            runs.insert(0, ("old", args.baseline_src))
        for code, src in runs:
            row = measure(topology, workers, seconds=args.duration, code=code, baseline_src=src)
            rows.append(row)
            print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    checked = check_targets(rows)
    print()
    print(format_table(rows))
    print()
    print(json.dumps(checked, indent=2))
    if args.json:
        result = {
            "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
            "duration_per_run_s": args.duration,
            "rows": [asdict(row) for row in rows],
            "targets": checked,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
