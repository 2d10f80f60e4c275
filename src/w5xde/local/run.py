"""`w5xde local`: the embedded default — N real worker processes on loopback, one result.

Each worker is a `w5xde worker` child with a generated key and its own port; they
print JSON report lines (`ReportLine`), folded by the same code as the operator's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from w5xde.api.v1alpha1 import (
    MAX_SAMPLES,
    RATIO_WITHOUT_CODEC,
    Codec,
    CompressionClusterSpec,
    CompressionSpec,
    ExpectSpec,
    LogMode,
    NetworkSpec,
    Profile,
    SecuritySpec,
    Source,
    WorkloadSpec,
    parse_log_mode,
)
from w5xde.contract import certificates, results
from w5xde.contract.figures import fold_reports
from w5xde.contract.link_figures import link_rows
from w5xde.contract.report import LinkReport, ReportLine, WorkerReport
from w5xde.contract.results import Outcome, RunResult, SampleSet
from w5xde.contract.worker_config import TlsConfig, WorkerConfig, WorkerSettings
from w5xde.local.summary import link_result, local_result, worker_result
from w5xde.local.view import format_table, live_view
from w5xde.worker import openssl_config

EXIT_USAGE = 2
MAX_LOCAL_WORKERS = 64
_REPORT_INTERVAL_S = 0.5
_STOP_GRACE_S = 15.0


#: Exit codes: a missed expectation, and a run stopped by SIGINT / SIGTERM (128 + signal).
EXIT_FAILED = 1
EXIT_MISSED = 3
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


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
    samples: int = 1
    expect: ExpectSpec = field(default_factory=ExpectSpec)


_OPTION_OF_FIELD = {
    "batch_bytes": "--batch-bytes",
    "level": "--level",
    "threads": "--threads",
    "codec": "--codec",
    "context": "--context",
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
    if not 2 <= args.workers <= MAX_LOCAL_WORKERS:
        raise UsageError(
            f"--workers: must be between 2 and {MAX_LOCAL_WORKERS} "
            "(every worker sends to its peers; a ring of one sends nowhere)"
        )
    if not (args.duration > 0 and math.isfinite(args.duration)):
        raise UsageError(
            "--duration: must be a finite number of seconds greater than 0 "
            "(for a long run give a large one and stop it with Ctrl-C)"
        )
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UsageError(f"--samples: must be between 1 and {MAX_SAMPLES}")
    expect = parse_expectations(args.expect)
    if args.plot is not None:
        check_plot_path(args.plot)
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
        compression = CompressionSpec(
            codec=args.codec, level=args.level, threads=args.threads, context=args.context
        )
        network = NetworkSpec(socket_buffer_bytes=args.socket_buffer, chunk_bytes=args.chunk_bytes)
    except ValidationError as error:
        raise UsageError(usage_message(error)) from None
    except ValueError:
        profiles = ", ".join(profile.value for profile in Profile)
        raise UsageError(f"--source: the synthetic profile must be one of {profiles}") from None
    if expect.min_compression_ratio > 1 and compression.codec is Codec.NONE:
        raise UsageError("--expect " + RATIO_WITHOUT_CODEC)
    return LocalPlan(
        args.workers,
        args.duration,
        log_mode,
        workload,
        compression,
        network,
        args.tls,
        args.samples,
        expect,
    )


def parse_expectations(items: list[str]) -> ExpectSpec:
    """`--expect KEY=VALUE ...` as a `spec.expect` (the API's names and bounds)."""
    known = {info.alias or name: name for name, info in ExpectSpec.model_fields.items()}
    values: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if key not in known:
            raise UsageError(
                f"--expect: unknown expectation {key!r} (one of {', '.join(sorted(known))})"
            )
        try:
            value = float(text) if sep else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UsageError(f"--expect {key}: needs a number, as {key}=VALUE")
        values[key] = int(value) if key == "maxLostBatches" and value.is_integer() else value
    try:
        return ExpectSpec.model_validate(values)
    except ValidationError as error:
        detail = error.errors()[0]
        name = str(detail["loc"][-1]) if detail["loc"] else "?"
        raise UsageError(f"--expect {name}: {detail['msg']}") from None


def check_plot_path(path: Path) -> None:
    """`--plot` fails before the run, not after it: a writable directory and matplotlib."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--plot: {str(path)!r} is a directory; give a file name")
    if not directory.is_dir():
        raise UsageError(f"--plot: directory {str(directory)!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--plot: directory {str(directory)!r} is not writable")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot: needs matplotlib: pip install 'w5xde[plot]'")


def configuration(plan: LocalPlan) -> dict[str, Any]:
    """The run's effective configuration after defaulting, as a CompressionCluster spec
    (the fields `w5xde local` uses)."""
    seconds = f"{plan.duration:.3f}".rstrip("0").rstrip(".")
    spec = CompressionClusterSpec(
        workers=plan.workers,
        duration=f"{seconds}s",
        log_mode=plan.log_mode,
        workload=plan.workload,
        compression=plan.compression,
        network=plan.network,
        security=SecuritySpec(tls=plan.tls),
        expect=plan.expect,
    )
    shown = spec.model_dump(mode="json", by_alias=True, include=_LOCAL_SPEC_FIELDS)
    return {**shown, "samples": plan.samples}


_LOCAL_SPEC_FIELDS = {
    "workers", "duration", "log_mode", "workload", "compression", "network", "security",
    "expect",
}  # fmt: skip


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


def worker_configs(plan: LocalPlan, cluster_id: str) -> list[WorkerConfig]:
    """One WorkerConfig per local worker: every one on loopback, each on its own port."""
    ports = free_ports(plan.workers)
    shared = WorkerSettings(
        cluster_id=cluster_id,
        listen_host="127.0.0.1",
        metrics_port=0,
        peers=[f"127.0.0.1:{port}" for port in ports],
        log_mode=plan.log_mode,
        duration_seconds=plan.duration,
        workload=plan.workload,
        compression=plan.compression,
        network=plan.network,
    )
    # Every local worker runs on this machine: every link shares its node.
    node = socket.gethostname()
    return [
        WorkerConfig.model_validate({**shared.model_dump(), "name": f"local-{index}", "node": node})
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


def start_children(
    plan: LocalPlan,
    tls_directory: Path | None = None,
    cluster_id: str = "",
    children: list[Child] | None = None,
) -> list[Child]:
    """Start the workers, appending each to `children` as it starts (so a signal that
    arrives half-way still finds every started worker to stop); returns that list."""
    children = [] if children is None else children
    cluster_id = cluster_id or f"local-{secrets.token_hex(4)}"
    key = secrets.token_hex(32)
    configs = worker_configs(plan, cluster_id)
    if tls_directory is not None:
        sections = issue_identities([config.name for config in configs], tls_directory)
        configs = [
            config.model_copy(update={"tls": TlsConfig.model_validate(sections[config.name])})
            for config in configs
        ]
    for config in configs:
        rendered = config.model_dump_json(by_alias=True, exclude_none=True)
        env = dict(
            os.environ,
            W5XDE_CONFIG=rendered,
            W5XDE_CLUSTER_KEY=key,
            **openssl_config.child_environment(),
        )
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
        child = Child(config.name, process)
        children.append(child)
        child.reader = threading.Thread(
            target=child.follow, name=f"follow-{child.name}", daemon=True
        )
        child.reader.start()
    return children


@dataclass(frozen=True)
class Ending:
    """How a run ended: the signal that stopped it (0 if none), workers that failed."""

    signum: int = 0
    failed: tuple[str, ...] = ()

    @property
    def outcome(self) -> Outcome:
        if self.signum:
            return Outcome.INTERRUPTED
        return Outcome.FAILED if self.failed else Outcome.COMPLETE

    @property
    def reason(self) -> str:
        if self.signum:
            return f"stopped by {signal.Signals(self.signum).name}"
        return f"workers failed: {', '.join(self.failed)}" if self.failed else ""


def summarize(
    plan: LocalPlan,
    children: list[Child],
    *,
    run_id: str,
    started: datetime,
    wall_seconds: float,
    ending: Ending,
) -> RunResult:
    """The run's result (docs/results.md) from each worker's last report line."""
    lines = [
        (child, child.final or child.latest or ReportLine(name=child.name)) for child in children
    ]
    workers = [
        worker_result(
            child.name,
            child.process.returncode,
            line,
            line.elapsed_seconds or wall_seconds or 1.0,
        )
        for child, line in lines
    ]
    elapsed_of = {worker.name: worker.elapsed_seconds or 1.0 for worker in workers}
    reports = [_with_last_rtt(child, line.report) for child, line in lines]
    by_key = {(report.name, link.peer): link for report in reports for link in report.links}
    links = [
        link_result(row, by_key.get(row.key), elapsed_of.get(row.sender, 1.0))
        for row in link_rows(reports)
    ]
    return local_result(
        run_id=run_id,
        started=started,
        completed=started + timedelta(seconds=wall_seconds),
        outcome=ending.outcome,
        reason=ending.reason,
        configuration=configuration(plan),
        workers=workers,
        links=links,
        wall_seconds=wall_seconds,
        expect=plan.expect,
    )


def _with_last_rtt(child: Child, report: WorkerReport) -> WorkerReport:
    """The final report, each link's RTT and TCP state (cwnd, srtt, delivery rate) taken
    from the newest line that measured them (the final line comes after the drain, when
    a link may have had no ACK to time and its sockets are closed)."""
    timed: dict[str, LinkReport] = {}
    connected: dict[str, LinkReport] = {}
    for line in reversed(child.lines):
        for link in line.report.links:
            if link.rtt_samples > 0:
                timed.setdefault(link.peer, link)
            if link.tcp_srtt_seconds > 0:
                connected.setdefault(link.peer, link)
    links = []
    for link in report.links:
        update: dict[str, object] = {}
        if link.rtt_samples == 0 and link.peer in timed:
            source = timed[link.peer]
            update.update(
                rtt_p50_seconds=source.rtt_p50_seconds,
                rtt_p99_seconds=source.rtt_p99_seconds,
                rtt_samples=source.rtt_samples,
            )
        if link.tcp_srtt_seconds == 0 and link.peer in connected:
            source = connected[link.peer]
            update.update(
                tcp_cwnd_bytes=source.tcp_cwnd_bytes,
                tcp_srtt_seconds=source.tcp_srtt_seconds,
                tcp_delivery_rate_bytes_per_second=source.tcp_delivery_rate_bytes_per_second,
            )
        links.append(link.model_copy(update=update) if update else link)
    return report.model_copy(update={"links": links})


class StopSignalError(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived while the workers ran: stop them, report what ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class StopSignals:
    """The first stop signal; it raises `StopSignalError` only while `armed` (the wait),
    else it is only recorded, and any later one is ignored (the workers are draining)."""

    signum: int = 0
    armed: bool = False

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.signum:
            return
        self.signum = signum
        if self.armed:
            raise StopSignalError(signum)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Route SIGINT, SIGTERM and SIGHUP to a `StopSignals`; the old handlers come back after."""
    state = StopSignals()
    previous = {signum: signal.signal(signum, state.on_signal) for signum in _STOP_SIGNALS}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_local(args: argparse.Namespace) -> int:
    """Run the plan (`--samples` times); SIGINT or SIGTERM stops the workers cleanly and
    the partial result is still printed, marked Interrupted."""
    try:
        plan = plan_from_args(args)
    except UsageError as error:
        print(f"w5xde local: {error}", file=sys.stderr)
        return EXIT_USAGE
    kept: list[RunResult] = []
    ending = Ending()
    last: list[Child] = []
    if args.json_stream:
        print(json.dumps({"kind": "Configuration", "schemaVersion": results.SCHEMA_VERSION,
                          "configuration": configuration(plan)}), flush=True)  # fmt: skip
    with stop_signals() as stops:
        for _ in range(plan.samples):
            with tempfile.TemporaryDirectory(prefix="w5xde-local-tls-") as directory:
                result, ending, last = run_once(
                    args, plan, Path(directory) if plan.tls else None, stops
                )
            kept.append(result)
            if ending.signum:
                break
    document: RunResult | SampleSet = kept[0] if plan.samples == 1 else results.sample_set(kept)
    if args.json or args.json_stream:
        print(json.dumps(results.dump(document)), flush=True)
    else:
        print(format_table(document))
    if args.plot is not None and last:
        code = _plot(args.plot, plan, last, kept[-1])
        if code:
            return code
    return exit_code(document, ending)


def exit_code(document: RunResult | SampleSet, ending: Ending) -> int:
    """130 / 143 stopped by SIGINT / SIGTERM, 1 a worker failed, 3 an expectation missed."""
    if ending.signum:
        return 128 + ending.signum
    if document.outcome is Outcome.FAILED:
        print(f"w5xde local: {ending.reason or 'a sample failed'}", file=sys.stderr)
        return EXIT_FAILED
    if not document.passed:
        samples = document.samples if isinstance(document, SampleSet) else [document]
        for sample in samples:
            missed = results.missed_message(sample.expectations)
            if missed:
                print(f"w5xde local: {sample.run_id}: missed {missed}", file=sys.stderr)
        return EXIT_MISSED
    return 0


def _plot(path: Path, plan: LocalPlan, children: list[Child], result: RunResult) -> int:
    from w5xde.local import plot

    try:
        plot.plot_run(
            {child.name: child.lines for child in children},
            path,
            f"w5xde local: {plan.workers} workers, {result.figures.compression_ratio}x",
        )
    except (ImportError, ValueError, OSError) as error:
        print(f"w5xde local: --plot: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def run_once(
    args: argparse.Namespace, plan: LocalPlan, tls_directory: Path | None, stops: StopSignals
) -> tuple[RunResult, Ending, list[Child]]:
    """One run: start the workers, wait for the duration (or a stop signal), drain."""
    run_id = f"local-{secrets.token_hex(4)}"
    started_at = datetime.now(UTC)
    started = time.monotonic()
    children: list[Child] = []
    signum = 0
    deadline = started + plan.duration + _STOP_GRACE_S
    live = (
        Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
        if sys.stderr.isatty() and not (args.json or args.json_stream)
        else None
    )
    streamed = started
    try:
        stops.armed = True
        if stops.signum:
            raise StopSignalError(stops.signum)
        start_children(plan, tls_directory, run_id, children)
        with live if live is not None else contextlib.nullcontext():
            while any(child.process.poll() is None for child in children):
                if time.monotonic() > deadline:
                    _signal_all(children, signal.SIGTERM)
                    deadline = float("inf")
                if live is not None:
                    live.update(live_view([child.latest for child in children], started))
                if args.json_stream and time.monotonic() - streamed >= 1.0:
                    streamed = time.monotonic()
                    print(interval_line(run_id, children, streamed - started), flush=True)
                time.sleep(0.25)
    except StopSignalError as stop:
        signum = stop.signum
    except KeyboardInterrupt:
        signum = signal.SIGINT
    finally:
        stops.armed = False
    if signum:
        _signal_all(children, signal.SIGTERM)
    _reap(children)
    signum = signum or stops.signum
    failed = tuple(child.name for child in children if child.process.returncode not in (0, None))
    ending = Ending(signum, () if signum else failed)
    result = summarize(
        plan,
        children,
        run_id=run_id,
        started=started_at,
        wall_seconds=time.monotonic() - started,
        ending=ending,
    )
    return result, ending, children


def interval_line(run_id: str, children: list[Child], seconds: float) -> str:
    """One `--json-stream` line: the workers' rates over their last report window."""
    figures = fold_reports([child.latest.report for child in children if child.latest])
    return json.dumps(
        {
            "kind": "Interval",
            "runId": run_id,
            "seconds": round(seconds, 3),
            "throughputBytesPerSecond": figures.throughput_bytes_per_second,
            "wireBytesPerSecond": figures.wire_bytes_per_second,
            "batchesPerSecond": figures.batches_per_second,
            "compressionRatio": figures.compression_ratio,
            "cpuSecondsPerGb": figures.cpu_seconds_per_gb,
            "rssMaxBytes": figures.memory_bytes,
            "lostBatches": figures.totals.lost_batches,
        }
    )


def _reap(children: list[Child]) -> None:
    """Wait for every worker; one that does not stop within the grace is killed."""
    for child in children:
        try:
            child.process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        if child.reader is not None:
            child.reader.join(timeout=5)


def _signal_all(children: list[Child], signum: int) -> None:
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum)
