"""`w5xde local`: the embedded default — N real worker processes on loopback, one result.

Each worker is a `w5xde worker` child with a generated key and its own port; they
print JSON report lines (`ReportLine`), folded by the same code as the operator's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from w5xde.api.v1alpha1 import (
    CompressionSpec,
    LogMode,
    NetworkSpec,
    Profile,
    Source,
    WorkloadSpec,
    parse_log_mode,
)
from w5xde.contract import certificates
from w5xde.contract.figures import compression_ratio, totals_of
from w5xde.contract.link_figures import link_rows
from w5xde.contract.report import LinkReport, ReportLine, WorkerReport
from w5xde.worker.local_view import format_table, live_view

EXIT_USAGE = 2
MAX_LOCAL_WORKERS = 64
_REPORT_INTERVAL_S = 0.5
_STOP_GRACE_S = 15.0


def add_local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
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


class UsageError(ValueError):
    """A command-line value that cannot run; the message names the option and the rule."""


@dataclass(frozen=True)
class LocalPlan:
    """The validated run: the same API models a CompressionCluster carries."""

    workers: int
    duration: float
    log_mode: LogMode
    workload: WorkloadSpec
    compression: CompressionSpec
    network: NetworkSpec
    tls: bool = True


_OPTION_OF_FIELD = {
    "batch_bytes": "--batch-bytes",
    "level": "--level",
    "threads": "--threads",
    "codec": "--codec",
    "profile": "--source",
    "topology": "--topology",
    "streams_per_peer": "--streams-per-peer",
    "socket_buffer_bytes": "--socket-buffer",
    "chunk_bytes": "--chunk-bytes",
    "rate_limit_bytes_per_second": "--rate-limit",
    "balance": "--balance",
}


#: The API's field paths as they open its rule messages (`network.chunkBytes must ...`).
_OPTION_OF_PATH = {
    "compression.level": "--level",
    "network.chunkBytes": "--chunk-bytes",
    "network.socketBufferBytes": "--socket-buffer",
    "workload.topology": "--topology",
    "workload.streamsPerPeer": "--streams-per-peer",
    "workload.path": "--source",
}


def usage_message(error: ValidationError) -> str:
    """pydantic's first error as `--option: rule`: the option, never pydantic's wording
    ("Value error, ") nor its path, and the field not named twice."""
    item = error.errors()[0]
    message = str(item["msg"]).removeprefix("Value error, ")
    option = _OPTION_OF_FIELD.get(str(item["loc"][-1])) if item["loc"] else None
    for path, named in _OPTION_OF_PATH.items():
        if message.startswith(path):
            option = option or named
            message = message[len(path) :].lstrip(": ")
            break
    for path, named in _OPTION_OF_PATH.items():
        message = message.replace(path, named)
    return f"{option or '--' + str(item['loc'][-1] if item['loc'] else 'options')}: {message}"


def plan_from_args(args: argparse.Namespace) -> LocalPlan:
    """Validate the options with the API models so the rules are the CR's rules."""
    if not 1 <= args.workers <= MAX_LOCAL_WORKERS:
        raise UsageError(f"--workers: must be between 1 and {MAX_LOCAL_WORKERS}")
    if not args.duration > 0:
        raise UsageError("--duration: must be greater than 0 seconds")
    kind, sep, value = args.source.partition(":")
    if not sep or kind not in ("synthetic", "file") or not value:
        raise UsageError("--source: must be synthetic:PROFILE or file:PATH")
    if kind == "file" and not os.path.exists(value):
        raise UsageError(f"--source: {value!r} does not exist")
    try:
        log_mode = LogMode(str(parse_log_mode(args.log_mode)))
    except ValueError:
        raise UsageError("--log-mode: must be silent, normal, verbose or 1, 2, 3") from None
    try:
        workload = WorkloadSpec(
            source=Source(kind),
            profile=Profile(value) if kind == "synthetic" else Profile.MIXED,
            path=value if kind == "file" else "",
            batch_bytes=args.batch_bytes,
            topology=args.topology,
            streams_per_peer=args.streams_per_peer,
            rate_limit_bytes_per_second=args.rate_limit,
            balance=args.balance,
        )
        compression = CompressionSpec(codec=args.codec, level=args.level, threads=args.threads)
        network = NetworkSpec(socket_buffer_bytes=args.socket_buffer, chunk_bytes=args.chunk_bytes)
    except ValidationError as error:
        raise UsageError(usage_message(error)) from None
    except ValueError:
        profiles = ", ".join(profile.value for profile in Profile)
        raise UsageError(f"--source: the synthetic profile must be one of {profiles}") from None
    return LocalPlan(
        args.workers, args.duration, log_mode, workload, compression, network, args.tls
    )


#: Where `free_ports` looks when the kernel's ephemeral range cannot be read.
_FALLBACK_EPHEMERAL_LOW = 32768
_LOWEST_PORT = 10000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_LOW


def free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range.

    Between this check and the workers' own bind, any outgoing connection on the
    machine could take an ephemeral port as its source port; ports below that range
    are only ever taken by an explicit bind, so the gap is safe in practice.
    """
    chooser = random.SystemRandom()
    high = max(_ephemeral_low(), _LOWEST_PORT + 1000)
    holders: list[socket.socket] = []
    try:
        while len(holders) < count:
            candidate = socket.socket()
            try:
                candidate.bind(("127.0.0.1", chooser.randrange(_LOWEST_PORT, high)))
            except OSError:
                candidate.close()
                continue
            holders.append(candidate)
        return [holder.getsockname()[1] for holder in holders]
    finally:
        for holder in holders:
            holder.close()


def worker_configs(plan: LocalPlan, cluster_id: str) -> list[dict[str, Any]]:
    """One WorkerConfig (as JSON data) per local worker."""
    ports = free_ports(plan.workers)
    peers = [f"127.0.0.1:{port}" for port in ports]
    return [
        {
            "name": f"local-{index}",
            "clusterId": cluster_id,
            # Every local worker runs on this machine: every link shares its node.
            "node": socket.gethostname(),
            "listenHost": "127.0.0.1",
            "metricsPort": 0,
            "peers": peers,
            "logMode": plan.log_mode.value,
            "durationSeconds": plan.duration,
            "workload": plan.workload.model_dump(mode="json", by_alias=True),
            "compression": plan.compression.model_dump(mode="json", by_alias=True),
            "network": plan.network.model_dump(mode="json", by_alias=True),
        }
        for index in range(plan.workers)
    ]


@dataclass
class Child:
    """A worker process and the newest report line it printed."""

    name: str
    process: subprocess.Popen[str]
    latest: ReportLine | None = None
    final: ReportLine | None = None
    #: Every report line, for `--plot` (one per report interval: 2 per second).
    lines: list[ReportLine] = field(default_factory=list)
    reader: threading.Thread | None = None

    def follow(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            try:
                line = ReportLine.model_validate_json(text)
            except ValidationError:
                continue  # not a report line (a stray print): the next one will do
            self.latest = line
            self.lines.append(line)
            if line.final:
                self.final = line


def issue_identities(names: list[str], directory: Path) -> dict[str, dict[str, str]]:
    """A CA for this run and a certificate per worker, as files only this user can read;
    the `tls` section of each worker's config."""
    authority = certificates.new_authority(directory.name)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(authority.certificate_pem)
    sections = {}
    for name in names:
        certificate, key = certificates.issue(authority, name)
        (directory / f"{name}.crt").write_bytes(certificate)
        key_file = directory / f"{name}.key"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        sections[name] = {
            "source": "files",
            "caFile": str(ca_file),
            "certificateFile": str(directory / f"{name}.crt"),
            "keyFile": str(key_file),
        }
    return sections


def start_children(plan: LocalPlan, tls_directory: Path | None = None) -> list[Child]:
    key = secrets.token_hex(32)
    cluster_id = f"local-{secrets.token_hex(4)}"
    children = []
    configs = worker_configs(plan, cluster_id)
    if tls_directory is not None:
        sections = issue_identities([config["name"] for config in configs], tls_directory)
        for config in configs:
            config["tls"] = sections[config["name"]]
    for config in configs:
        env = dict(os.environ, W5XDE_CONFIG=json.dumps(config), W5XDE_CLUSTER_KEY=key)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "w5xde",
                "worker",
                "--report-interval",
                str(_REPORT_INTERVAL_S),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        child = Child(config["name"], process)
        child.reader = threading.Thread(
            target=child.follow, name=f"follow-{child.name}", daemon=True
        )
        child.reader.start()
        children.append(child)
    return children


def summarize(plan: LocalPlan, children: list[Child], wall_seconds: float) -> dict[str, Any]:
    """The run's figures (the seed's set), from each worker's last report line."""
    lines = [
        (child, child.final or child.latest or ReportLine(name=child.name)) for child in children
    ]
    nodes: list[dict[str, Any]] = []
    for child, line in lines:
        report, extras = line.report, line.extras
        elapsed = line.elapsed_seconds or wall_seconds or 1.0
        nodes.append(
            {
                "name": child.name,
                "exit_code": child.process.returncode,
                "elapsed_s": elapsed,
                "batches": report.batches,
                "raw_bytes": report.raw_bytes,
                "wire_bytes": report.wire_bytes,
                "throughput_bytes_per_s": report.raw_bytes / elapsed,
                "batches_per_s": report.batches / elapsed,
                "compression_ratio": compression_ratio(report.raw_bytes, report.wire_bytes),
                "network_seconds": extras.network_seconds_total,
                "compression_seconds": extras.compression_seconds_total,
                "rss_bytes_max": extras.rss_peak_bytes,
                "lost_batches": report.lost_batches,
                "corrupt_batches": report.corrupt_batches,
                "resent_batches": report.resent_batches,
                "duplicate_batches": extras.duplicate_batches,
                "rejected_connections": extras.rejected_connections,
                "socket_buffer": report.socket_buffer.model_dump(mode="json", by_alias=True),
            }
        )
    count = max(1, len(nodes))
    elapsed_of = {node["name"]: node["elapsed_s"] or 1.0 for node in nodes}
    links = [
        {
            "from": row.sender,
            "to": row.receiver,
            "raw_bytes": row.raw_bytes,
            "raw_bytes_per_s": round(row.raw_bytes / elapsed_of.get(row.sender, 1.0), 1),
            "wire_bytes_per_s": round(row.wire_bytes / elapsed_of.get(row.sender, 1.0), 1),
            "batches_per_s": round(row.batches / elapsed_of.get(row.sender, 1.0), 1),
            "lost_batches": row.lost_batches,
            "resent_batches": row.resent_batches,
            "rtt_p50_s": row.rtt_p50_seconds,
            "rtt_p99_s": row.rtt_p99_seconds,
            "shared_node": row.shared_node,
        }
        for row in link_rows([_with_last_rtt(child, line.report) for child, line in lines])
    ]
    duration = max((node["elapsed_s"] for node in nodes), default=wall_seconds)
    totals = totals_of(line.report for _, line in lines)
    return {
        "workers": plan.workers,
        "duration_s": round(duration, 3),
        "throughput_bytes_per_s": round(totals.raw_bytes / duration, 1),
        "wire_bytes_per_s": round(totals.wire_bytes / duration, 1),
        "batches": totals.batches,
        "batches_per_s": round(totals.batches / duration, 1),
        "compression_ratio": compression_ratio(totals.raw_bytes, totals.wire_bytes),
        "network_seconds_per_worker": round(sum(n["network_seconds"] for n in nodes) / count, 3),
        "compression_seconds_per_worker": round(
            sum(n["compression_seconds"] for n in nodes) / count, 3
        ),
        "rss_bytes_max": max((node["rss_bytes_max"] for node in nodes), default=0),
        "lost_batches": totals.lost_batches,
        "corrupt_batches": totals.corrupt_batches,
        "resent_batches": totals.resent_batches,
        "nodes": nodes,
        "links": links,
    }


def _with_last_rtt(child: Child, report: WorkerReport) -> WorkerReport:
    """The final report, each link's RTT taken from the newest line that measured one
    (the final line comes after the drain, when a link may have had no ACK to time)."""
    measured: dict[str, LinkReport] = {}
    for line in reversed(child.lines):
        for link in line.report.links:
            if link.rtt_samples > 0 and link.peer not in measured:
                measured[link.peer] = link
    links = [
        link.model_copy(
            update={
                "rtt_p50_seconds": measured[link.peer].rtt_p50_seconds,
                "rtt_p99_seconds": measured[link.peer].rtt_p99_seconds,
                "rtt_samples": measured[link.peer].rtt_samples,
            }
        )
        if link.rtt_samples == 0 and link.peer in measured
        else link
        for link in report.links
    ]
    return report.model_copy(update={"links": links})


def run_local(args: argparse.Namespace) -> int:
    """Run the plan; Ctrl-C stops the workers cleanly and the result is still printed."""
    try:
        plan = plan_from_args(args)
    except UsageError as error:
        print(f"w5xde local: {error}", file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="w5xde-local-tls-") as directory:
        return _run_plan(args, plan, Path(directory) if plan.tls else None)


def _run_plan(args: argparse.Namespace, plan: LocalPlan, tls_directory: Path | None) -> int:
    started = time.monotonic()
    children = start_children(plan, tls_directory)
    interrupted = False
    deadline = started + plan.duration + _STOP_GRACE_S
    live = (
        Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
        if sys.stderr.isatty() and not args.json
        else None
    )
    try:
        with live if live is not None else contextlib.nullcontext():
            while any(child.process.poll() is None for child in children):
                if time.monotonic() > deadline:
                    _signal_all(children, signal.SIGTERM)
                    deadline = float("inf")
                if live is not None:
                    live.update(live_view([child.latest for child in children], started))
                time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        _signal_all(children, signal.SIGTERM)
    for child in children:
        try:
            child.process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        if child.reader is not None:
            child.reader.join(timeout=5)
    result = summarize(plan, children, time.monotonic() - started)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    if args.plot is not None:
        from w5xde.worker import plot

        try:
            plot.plot_run(
                {child.name: child.lines for child in children},
                args.plot,
                f"w5xde local: {plan.workers} workers, {result['compression_ratio']}x",
            )
        except (ImportError, ValueError) as error:
            print(f"w5xde local: --plot: {error}", file=sys.stderr)
            return 1
    failed = [child.name for child in children if child.process.returncode not in (0, None)]
    if failed:
        print(f"w5xde local: workers failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _signal_all(children: list[Child], signum: int) -> None:
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum)
