"""Shaped links: w5xde levels none/1/3/6/auto against `zstd -1 | nc` and `zstd --adapt | nc`.

Needs root, iproute2 (`ip netns`, `tc`), nc and zstd (`make bench-links` installs
them).  Two network namespaces joined by one veth pair, both ends shaped with `tc tbf`
(this kernel has no netem) at 100 Mbit/s, 400 Mbit/s, 2 Gbit/s and unshaped; on each
link, one direction at a time: a `w5xde worker` sends to another (each policy), then
the two pipelines run across the same link on the same data.  A second scenario runs
4 workers all-to-all on a bridge where one worker's link is shaped to a quarter of
the others', with `balance: even` and `balance: capacity`.

Everything it creates (prefix `w5l-`, 10.232.0.0/16) is removed at the end, also
after an error.  Prints a table and writes JSON (`--json`):

    sudo .venv/bin/python bench/bench_links.py --json bench/links-results.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import zstandard

from w5xde.api.v1alpha1 import Profile
from w5xde.worker.sources import synthetic_pool

PREFIX = "w5l-"
KEY = "bench-links-key-0123456789"
PORT = 7070
LINKS_MBIT = (100, 400, 2000, 0)
#: `auto-autobuf`: level auto with socketBufferBytes: auto (kernel autotuning, floored).
#: A `-frame` suffix runs the policy with `compression.context: frame` (the others: stream,
#: the default since issue 21).
POLICIES = ("none", "1", "1-frame", "3", "6", "9", "auto", "auto-frame", "auto-autobuf")
QUARTER_FAST_MBIT = 400
PIPELINE_POOL_BYTES = 32 * 1024 * 1024


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def cleanup() -> None:
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            run("ip", "netns", "del", name, check=False)
    links = json.loads(run("ip", "-j", "link", "show", check=False).stdout or "[]")
    for link in links:
        if link.get("ifname", "").startswith(PREFIX):
            run("ip", "link", "del", link["ifname"], check=False)


def shape(namespace: str | None, device: str, mbit: int) -> None:
    """tbf on `device` (in `namespace`, or the host): `mbit` Mbit/s, or no qdisc for 0."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    run(*prefix, "tc", "qdisc", "del", "dev", device, "root", check=False)
    if mbit <= 0:
        return
    rate_bytes = mbit * 1_000_000 // 8
    # The bucket must hold a GSO segment (64 KiB) and about 4 ms of the rate.
    burst = max(256 * 1024, rate_bytes // 250)
    run(*prefix, "tc", "qdisc", "add", "dev", device, "root", "tbf",
        "rate", f"{mbit}mbit", "burst", str(burst), "latency", "20ms")  # fmt: skip


def ns_exec(namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace]


def tx_bytes(namespace: str, device: str) -> int:
    out = run(*ns_exec(namespace), "cat", f"/sys/class/net/{device}/statistics/tx_bytes").stdout
    return int(out.strip())


def tcp_bytes_acked(namespace: str, port: int) -> int:
    """TCP payload bytes acknowledged on the namespace's connections to `port` (ss -ti)."""
    out = run(*ns_exec(namespace), "ss", "-tinH", "state", "established",
              f"( dport = :{port} )", check=False).stdout  # fmt: skip
    total = 0
    for word in out.split():
        if word.startswith("bytes_acked:"):
            total += int(word.split(":", 1)[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (and their reaped children) so far."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(value) for value in fields[11:15]) / tick
    return total


@dataclass
class Row:
    link_mbit: int
    policy: str
    raw_mb_per_s: float = 0.0
    wire_mb_per_s: float = 0.0
    ratio: float = 0.0
    cpu_s_per_gb: float = 0.0
    lost_batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)

    def follow(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(text))

    def at(self, since: float) -> dict[str, Any]:
        for line in self.lines:
            if line.get("elapsedSeconds", line.get("elapsed_seconds", 0)) >= since:
                return line
        return self.lines[-1] if self.lines else {}

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        finals = [line for line in self.lines if line.get("final")]
        return finals[-1] if finals else (self.lines[-1] if self.lines else {})


def start_worker(
    namespace: str, name: str, peers: list[str], workload: dict[str, Any], extra: dict[str, Any]
) -> Worker:
    config = {
        "name": name,
        "clusterId": "bench-links",
        "metricsPort": 0,
        "peers": peers,
        "workload": workload,
        **extra,
    }
    env = dict(os.environ, W5XDE_CONFIG=json.dumps(config), W5XDE_CLUSTER_KEY=KEY)
    process = subprocess.Popen(
        [*ns_exec(namespace), sys.executable, "-m", "w5xde", "worker", "--report-interval", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker = Worker(name, process)
    threading.Thread(target=worker.follow, daemon=True).start()
    return worker


def elapsed_of(line: dict[str, Any]) -> float:
    return float(line.get("elapsedSeconds", 0.0))


def raw_of(line: dict[str, Any]) -> int:
    return int(line.get("report", {}).get("rawBytes", 0))


def wire_of(line: dict[str, Any]) -> int:
    """Frame bytes (headers and payloads) the receiver took in."""
    return int(line.get("report", {}).get("wireBytes", 0))


class PairBed:
    """Two namespaces on one veth pair: a (10.232.0.1) and b (10.232.0.2)."""

    A, B = f"{PREFIX}a", f"{PREFIX}b"
    ADDRESS = {A: "10.232.0.1", B: "10.232.0.2"}

    def __init__(self) -> None:
        for namespace in (self.A, self.B):
            run("ip", "netns", "add", namespace)
        run("ip", "link", "add", f"{PREFIX}va", "type", "veth", "peer", "name", f"{PREFIX}vb")
        for namespace, device in ((self.A, f"{PREFIX}va"), (self.B, f"{PREFIX}vb")):
            run("ip", "link", "set", device, "netns", namespace)
            run(*ns_exec(namespace), "ip", "link", "set", "lo", "up")
            run(*ns_exec(namespace), "ip", "link", "set", device, "name", "eth0")
            run(*ns_exec(namespace), "ip", "addr", "add", f"{self.ADDRESS[namespace]}/24",
                "dev", "eth0")  # fmt: skip
            run(*ns_exec(namespace), "ip", "link", "set", "eth0", "up")

    def shape(self, mbit: int) -> None:
        for namespace in (self.A, self.B):
            shape(namespace, "eth0", mbit)


def w5xde_row(
    bed: PairBed, mbit: int, policy: str, workload: dict[str, Any], warm: float, seconds: float
) -> Row:
    """A sends to B (one direction; B sends nowhere) at `policy`."""
    a, b = f"{PairBed.ADDRESS[PairBed.A]}:{PORT}", f"{PairBed.ADDRESS[PairBed.B]}:{PORT}"
    context = "frame" if policy.endswith("-frame") else "stream"
    level = policy.removesuffix("-autobuf").removesuffix("-frame")
    compression: dict[str, Any] = (
        {"codec": "none"}
        if level == "none"
        else {"level": level if level == "auto" else int(level), "context": context}
    )
    extra: dict[str, Any] = {"compression": compression}
    if policy.endswith("-autobuf"):
        extra["network"] = {"socketBufferBytes": "auto"}
    # The receiver's own peer list is itself alone, so it sends nothing back.
    receiver = start_worker(PairBed.B, "receiver-0", [b], workload, extra)
    time.sleep(0.8)
    sender = start_worker(PairBed.A, "sender-0", [a, b], workload, extra)
    pids = [receiver.process.pid, sender.process.pid]
    try:
        time.sleep(warm)
        cpu0 = cpu_seconds(pids)
        first = receiver.lines[-1] if receiver.lines else {}
        time.sleep(seconds)
        cpu1 = cpu_seconds(pids)
        last = receiver.lines[-1] if receiver.lines else {}
        links = (sender.lines[-1] if sender.lines else {}).get("report", {}).get("linkTuning", {})
    finally:
        # Both at once, as a cluster stops: the sender drains into a live receiver.
        for worker in (sender, receiver):
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        final_sender = sender.stop()
        final_receiver = receiver.stop()
    span = max(1e-3, elapsed_of(last) - elapsed_of(first))
    raw = raw_of(last) - raw_of(first)
    wire = wire_of(last) - wire_of(first)
    lost = int(final_receiver.get("report", {}).get("lostBatches", 0)) + int(
        final_sender.get("report", {}).get("lostBatches", 0)
    )
    return Row(
        link_mbit=mbit,
        policy=policy,
        raw_mb_per_s=raw / span / 1e6,
        wire_mb_per_s=wire / span / 1e6,
        ratio=raw / wire if wire else 0.0,
        cpu_s_per_gb=(cpu1 - cpu0) / (raw / 1e9) if raw else 0.0,
        lost_batches=lost,
        extra={"link": next(iter(links.values()), {}), "context": context},
    )


def pipeline_row(
    bed: PairBed, mbit: int, policy: str, data_file: str, warm: float, seconds: float
) -> Row:
    """`cat data... | zstd ARGS | nc` in A -> `nc -l | zstd -d` in B, raw bytes counted."""
    args = ["-1"] if policy == "zstd-1-nc" else ["--adapt"]
    b = PairBed.ADDRESS[PairBed.B]
    listen = subprocess.Popen([*ns_exec(PairBed.B), "nc", "-l", str(PORT)],
                              stdout=subprocess.PIPE)  # fmt: skip
    unpack = subprocess.Popen(["zstd", "-d", "-c", "-q"], stdin=listen.stdout,
                              stdout=subprocess.PIPE)  # fmt: skip
    assert listen.stdout is not None
    listen.stdout.close()
    received = 0

    def count() -> None:
        nonlocal received
        assert unpack.stdout is not None
        while chunk := cast("io.BufferedReader", unpack.stdout).read1(1 << 20):
            received += len(chunk)

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    time.sleep(0.5)
    repeats = max(4, min(4000, 16_000_000_000 // max(1, os.path.getsize(data_file))))
    feed = subprocess.Popen(["cat", *[data_file] * repeats], stdout=subprocess.PIPE)
    pack = subprocess.Popen(["zstd", *args, "-c", "-q"], stdin=feed.stdout,
                            stdout=subprocess.PIPE)  # fmt: skip
    send = subprocess.Popen([*ns_exec(PairBed.A), "nc", "-N", b, str(PORT)], stdin=pack.stdout,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    assert feed.stdout is not None
    assert pack.stdout is not None
    feed.stdout.close()
    pack.stdout.close()
    processes = [feed, pack, send, listen, unpack]
    pids = [process.pid for process in processes]
    try:
        time.sleep(warm)
        raw0, cpu0, tx0 = received, cpu_seconds(pids), tcp_bytes_acked(PairBed.A, PORT)
        started = time.monotonic()
        time.sleep(seconds)
        raw1, cpu1, tx1 = received, cpu_seconds(pids), tcp_bytes_acked(PairBed.A, PORT)
        span = time.monotonic() - started
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for process in processes:
            process.wait(10)
        counter.join(5)
    raw, wire = raw1 - raw0, tx1 - tx0
    return Row(
        link_mbit=mbit,
        policy=policy,
        raw_mb_per_s=raw / span / 1e6,
        wire_mb_per_s=wire / span / 1e6,
        ratio=raw / wire if wire else 0.0,
        cpu_s_per_gb=(cpu1 - cpu0) / (raw / 1e9) if raw else 0.0,
        extra={"note": "one stream; wire = TCP bytes acknowledged (ss); CPU of cat, zstd, nc"},
    )


class BridgeBed:
    """`count` namespaces on a bridge (10.232.1.0/24); each veth shaped both ways."""

    BRIDGE = f"{PREFIX}br"

    def __init__(self, count: int) -> None:
        run("ip", "link", "add", self.BRIDGE, "type", "bridge")
        run("ip", "link", "set", self.BRIDGE, "up")
        self.namespaces: list[tuple[str, str, str]] = []
        for index in range(count):
            namespace, host = f"{PREFIX}n{index}", f"{PREFIX}h{index}"
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", host, "type", "veth", "peer", "name", f"{PREFIX}c{index}")
            run("ip", "link", "set", f"{PREFIX}c{index}", "netns", namespace)
            run("ip", "link", "set", host, "master", self.BRIDGE)
            run("ip", "link", "set", host, "up")
            run(*ns_exec(namespace), "ip", "link", "set", "lo", "up")
            run(*ns_exec(namespace), "ip", "link", "set", f"{PREFIX}c{index}", "name", "eth0")
            address = f"10.232.1.{10 + index}"
            run(*ns_exec(namespace), "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            run(*ns_exec(namespace), "ip", "link", "set", "eth0", "up")
            self.namespaces.append((namespace, host, address))

    def shape(self, index: int, mbit: int) -> None:
        namespace, host, _ = self.namespaces[index]
        shape(namespace, "eth0", mbit)  # out of the worker
        shape(None, host, mbit)  # into the worker


def balance_rows(
    workload: dict[str, Any], level: str, warm: float, seconds: float
) -> list[dict[str, Any]]:
    """4 workers all-to-all, worker 3's link at a quarter of the others', even vs capacity."""
    bed = BridgeBed(4)
    for index in range(4):
        bed.shape(index, QUARTER_FAST_MBIT // 4 if index == 3 else QUARTER_FAST_MBIT)
    peers = [f"{address}:{PORT}" for _, _, address in bed.namespaces]
    rows = []
    for balance in ("even", "capacity"):
        extra = {
            "compression": {"level": level if level == "auto" else int(level)},
        }
        work = {**workload, "topology": "all-to-all", "balance": balance}
        workers = [
            start_worker(namespace, f"w5l-{index}", peers, work, extra)
            for index, (namespace, _, _) in enumerate(bed.namespaces)
        ]
        try:
            time.sleep(warm)
            firsts = [worker.lines[-1] if worker.lines else {} for worker in workers]
            time.sleep(seconds)
            lasts = [worker.lines[-1] if worker.lines else {} for worker in workers]
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGTERM)
            finals = [worker.stop() for worker in workers]
        rate = sum(
            (raw_of(last) - raw_of(first)) / max(1e-3, elapsed_of(last) - elapsed_of(first))
            for first, last in zip(firsts, lasts, strict=True)
        )
        shares = {
            worker.name: {
                peer: link.get("share", 0.0)
                for peer, link in last.get("report", {}).get("linkTuning", {}).items()
            }
            for worker, last in zip(workers, lasts, strict=True)
        }
        # What each worker received in the window: the slow worker's share of the cluster.
        received = [raw_of(last) - raw_of(first) for first, last in zip(firsts, lasts, strict=True)]
        lost = sum(int(final.get("report", {}).get("lostBatches", 0)) for final in finals)
        sent = sum(int(final.get("extras", {}).get("sentBatches", 0)) for final in finals)
        delivered = sum(int(final.get("report", {}).get("batches", 0)) for final in finals)
        rows.append(
            {
                "balance": balance,
                "level": level,
                "fast_mbit": QUARTER_FAST_MBIT,
                "slow_mbit": QUARTER_FAST_MBIT // 4,
                "cluster_raw_mb_per_s": round(rate / 1e6, 1),
                "received_share": [round(value / max(1, sum(received)), 3) for value in received],
                "peer_shares": shares,
                "lost_batches": lost,
                "sent_acknowledged_batches": sent,
                "received_batches": delivered,
            }
        )
        print(f"balance {balance}: {rate / 1e6:.1f} MB/s raw, shares received "
              f"{rows[-1]['received_share']}, lost {lost}", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def mean_row(runs: list[Row]) -> Row:
    """The rounds of one policy on one link: mean figures, every round's raw MB/s kept."""
    count = len(runs)
    row = Row(
        link_mbit=runs[0].link_mbit,
        policy=runs[0].policy,
        raw_mb_per_s=sum(run.raw_mb_per_s for run in runs) / count,
        wire_mb_per_s=sum(run.wire_mb_per_s for run in runs) / count,
        cpu_s_per_gb=sum(run.cpu_s_per_gb for run in runs) / count,
        lost_batches=sum(run.lost_batches for run in runs),
        extra=dict(runs[-1].extra),
    )
    row.ratio = row.raw_mb_per_s / row.wire_mb_per_s if row.wire_mb_per_s else 0.0
    row.extra["rounds_raw_mb_per_s"] = [round(run.raw_mb_per_s, 1) for run in runs]
    row.extra["rounds_link"] = [run.extra.get("link", {}) for run in runs]
    return row


def format_table(rows: list[Row]) -> str:
    header = f"{'link':>9} {'policy':>14} {'raw MB/s':>9} {'wire MB/s':>9} {'ratio':>6} {'CPU s/GB':>9} {'level':>6}"
    lines = [header, "-" * len(header)]
    for row in rows:
        link = f"{row.link_mbit} Mbit" if row.link_mbit else "unshaped"
        level = row.extra.get("link", {}).get("level", "")
        lines.append(
            f"{link:>9} {row.policy:>14} {row.raw_mb_per_s:9.1f} {row.wire_mb_per_s:9.1f} "
            f"{row.ratio:6.2f} {row.cpu_s_per_gb:9.1f} {level!s:>6}"
        )
    return "\n".join(lines)


def check_targets(rows: list[Row], balance: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"links": []}
    for mbit in sorted({row.link_mbit for row in rows}):
        of = {row.policy: row for row in rows if row.link_mbit == mbit}
        fixed = [of[name] for name in ("none", "1", "3", "6", "9") if name in of]
        if "auto" not in of or not fixed:
            continue
        best = max(fixed, key=lambda row: row.raw_mb_per_s)
        auto = of["auto"].raw_mb_per_s
        adapt = of.get("zstd-adapt-nc")
        entry = {
            "link_mbit": mbit,
            "auto": round(auto, 1),
            "best_fixed": best.policy,
            "best_fixed_raw": round(best.raw_mb_per_s, 1),
            "auto_over_best": round(auto / best.raw_mb_per_s, 3) if best.raw_mb_per_s else 0,
            "auto_over_zstd_adapt_nc": round(auto / adapt.raw_mb_per_s, 2)
            if adapt and adapt.raw_mb_per_s
            else None,
        }
        if "1" in of and "1-frame" in of and of["1-frame"].ratio:
            entry["stream_over_frame_ratio_l1"] = round(of["1"].ratio / of["1-frame"].ratio, 3)
            entry["stream_over_frame_raw_l1"] = round(
                of["1"].raw_mb_per_s / max(1e-9, of["1-frame"].raw_mb_per_s), 3
            )
        over_best = round(auto / best.raw_mb_per_s, 3) if best.raw_mb_per_s else 0
        over_adapt = entry["auto_over_zstd_adapt_nc"]
        entry["met"] = over_best >= 0.95 and (
            over_adapt is None or (isinstance(over_adapt, float) and over_adapt >= 1.2)
        )
        out["links"].append(entry)
    out["auto_within_5_percent_everywhere"] = all(
        entry["auto_over_best"] >= 0.95 for entry in out["links"]
    )
    if len(balance) == 2:
        even, capacity = balance
        factor = capacity["cluster_raw_mb_per_s"] / max(1e-9, even["cluster_raw_mb_per_s"])
        out["capacity_over_even"] = {
            "factor": round(factor, 2),
            "target": 1.3,
            "lost_batches": even["lost_batches"] + capacity["lost_batches"],
            "met": factor >= 1.3 and even["lost_batches"] + capacity["lost_batches"] == 0,
        }
    return out


@contextlib.contextmanager
def data_source(source: str) -> Iterator[tuple[dict[str, Any], str]]:
    """(workload fields, a file the pipelines cat) for `synthetic:PROFILE` or `file:PATH`."""
    kind, _, value = source.partition(":")
    if kind == "file":
        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise SystemExit(f"SOURCE: {path} is not a file")
        yield {"source": "file", "path": path}, path
        return
    profile = Profile(value or "mixed")
    with tempfile.NamedTemporaryFile(prefix="w5l-pool-", suffix=".bin") as pool_file:
        # The pipelines cat this file over and over: it must be longer than any zstd window
        # `--adapt` may reach (8 MiB without --ultra), or they would compress the repeats.
        pool_file.write(synthetic_pool(profile, PIPELINE_POOL_BYTES))
        pool_file.flush()
        yield {"source": "synthetic", "profile": profile.value}, pool_file.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench/links-results.json")
    parser.add_argument("--source", default=os.environ.get("SOURCE") or "synthetic:mixed")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="runs per row, alternating order")
    parser.add_argument("--batch-bytes", type=int, default=65536)
    parser.add_argument("--links", default=",".join(str(mbit) for mbit in LINKS_MBIT))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--no-balance", action="store_true")
    parser.add_argument("--balance-level", default="1")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench-links: needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    for tool in ("ip", "tc", "nc", "zstd"):
        if shutil.which(tool) is None:
            print(f"bench-links: {tool} is missing (make worker-tools)", file=sys.stderr)
            return 2
    started = time.monotonic()
    rows: list[Row] = []
    balance: list[dict[str, Any]] = []
    cleanup()
    try:
        with data_source(args.source) as (workload, data_file):
            workload = {**workload, "batchBytes": args.batch_bytes}
            bed = PairBed()
            for mbit in (int(item) for item in args.links.split(",") if item):
                bed.shape(mbit)
                order = [*args.policies.split(","), "zstd-1-nc", "zstd-adapt-nc"]
                runs: dict[str, list[Row]] = {policy: [] for policy in order}
                # Rounds alternate the order, so a burst of load from the machine's other
                # users does not land on one policy only; the mean of the rounds is kept.
                for round_index in range(max(1, args.rounds)):
                    for policy in order if round_index % 2 == 0 else order[::-1]:
                        if policy.startswith("zstd-"):
                            row = pipeline_row(
                                bed, mbit, policy, data_file, args.warm, args.seconds
                            )
                        else:
                            row = w5xde_row(bed, mbit, policy, workload, args.warm, args.seconds)
                        runs[policy].append(row)
                        print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
                rows.extend(mean_row(runs[policy]) for policy in order)
            cleanup()
            if not args.no_balance:
                balance = balance_rows(workload, args.balance_level, args.warm + 2, args.seconds)
    finally:
        cleanup()
    targets = check_targets(rows, balance)
    print()
    print(format_table(rows))
    if balance:
        print()
        for item in balance:
            print(f"balance {item['balance']:>8}: cluster {item['cluster_raw_mb_per_s']:.1f} MB/s"
                  f" raw, received shares {item['received_share']}, lost {item['lost_batches']}")  # fmt: skip
    print()
    print(json.dumps(targets, indent=2))
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "zstandard": zstandard.__version__,
            "kernel": platform.release(),
            "load_average_at_end": os.getloadavg(),
        },
        "source": args.source,
        "batch_bytes": args.batch_bytes,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "warm_up_seconds": args.warm,
        "wall_seconds": round(time.monotonic() - started, 1),
        "rows": [asdict(row) for row in rows],
        "balance": balance,
        "targets": targets,
    }
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump(result, out, indent=2)
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
