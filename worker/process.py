"""The life of a worker process: config, start, serve metrics and the report, stop on signal."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import time
from pathlib import Path

from w5xde.contract.endpoints import ENV_CLUSTER_KEY, ENV_CLUSTER_KEY_FILE
from w5xde.contract.report import ReportLine
from w5xde.worker.config import (
    ConfigError,
    WorkerConfig,
    load_cluster_key,
    load_worker_config,
)
from w5xde.worker.keyring import KeyRing
from w5xde.worker.logs import configure_logging
from w5xde.worker.runtime import Worker
from w5xde.worker.stop_request import StopRequest

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("w5xde.worker")


def report_line(worker: Worker, *, final: bool, elapsed: float) -> str:
    """One JSON line: the WorkerReport plus the extras `w5xde local` and the tests read."""
    line = ReportLine(
        name=worker.config.name,
        final=final,
        elapsed_seconds=round(elapsed, 3),
        report=worker.report(),
        extras=worker.extras(),
    )
    return line.model_dump_json(by_alias=True)


def run_worker_process(*, config_file: str | None, report_interval: float) -> int:
    """`w5xde worker`: exit 2 for bad config, 1 if the worker cannot start, else 0."""
    try:
        config = load_worker_config(config_file=config_file)
        key = load_cluster_key()
    except ConfigError as error:
        print(f"w5xde worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_mode)
    # Before the first thread starts, so every thread inherits the blocked signals.
    stop = StopRequest()
    key_file = os.environ.get(ENV_CLUSTER_KEY_FILE)
    from_file = key_file and not os.environ.get(ENV_CLUSTER_KEY)
    keyring = KeyRing.from_file(Path(key_file)) if from_file and key_file else KeyRing(key)
    try:
        worker = Worker(config, key, keyring=keyring)
    except (ValueError, OSError) as error:
        print(f"w5xde worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    # A worker that will not stop or has gone quiet shows where every thread is, on
    # stderr, without being stopped: `kill -USR1 PID` (docs/worker.md).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        worker.start()
    except OSError as error:
        print(f"w5xde worker: cannot listen: {error}", file=sys.stderr)
        return EXIT_FAILED
    started = time.monotonic()
    metrics = None
    if config.metrics_port:
        from w5xde.worker.metrics import MetricsServer
        from w5xde.worker.report_endpoint import ReportEndpoint

        endpoint = (
            ReportEndpoint(key, worker.report, worker.resize, tls=worker.tls, keyring=keyring)
            if config.reporting
            else None
        )
        try:
            metrics = MetricsServer.for_worker(
                worker,
                config.metrics_host or config.listen_host,
                config.metrics_port,
                report=endpoint,
            )
            metrics.start()
        except OSError as error:
            log.error("metrics port %d unavailable: %s", config.metrics_port, error)

    def emit_progress() -> None:
        if report_interval > 0:
            _print_line(report_line(worker, final=False, elapsed=_since(started)))

    deadline = _deadline(config, started)
    tick = report_interval if report_interval > 0 else 1.0
    while not stop.is_set():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        if stop.wait(tick if remaining is None else min(tick, remaining)):
            break
        emit_progress()
    elapsed = _since(started)
    worker.finish()
    if config.reporting is not None and metrics is not None and not stop.is_set():
        # A bounded run in a pod: the operator still has to pull the final figures, and
        # a container that exits would be restarted into a new run. Wait to be stopped.
        log.warning("run finished after %.1f s; serving the final report", elapsed)
        stop.wait()
    if metrics is not None:
        metrics.stop()
    if report_interval > 0:
        _print_line(report_line(worker, final=True, elapsed=elapsed))
    return EXIT_OK


def _deadline(config: WorkerConfig, started: float) -> float | None:
    """When this worker's bounded run ends (monotonic): the run's one deadline when the
    operator published it (a worker started by a scale or a restart), else `duration`
    after this worker's start."""
    if config.run_deadline is not None:
        return started + max(0.0, config.run_deadline - time.time())
    return started + config.duration_seconds if config.duration_seconds else None


def _since(started: float) -> float:
    return time.monotonic() - started


def _print_line(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
