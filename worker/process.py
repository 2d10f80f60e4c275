"""The life of a worker process: config, start, serve metrics, publish status, stop on signal."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import Any, Protocol

from w5xde.worker.config import ConfigError, StatusTarget, load_cluster_key, load_worker_config
from w5xde.worker.logs import configure_logging
from w5xde.worker.runtime import Worker

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("w5xde.worker")


class Publisher(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def _status_publisher(worker: Worker, target: StatusTarget) -> Publisher | None:
    """The operator's StatusPublisher, if that part is installed; the worker runs without it."""
    try:
        from w5xde.worker.status_publisher import (  # type: ignore[import-not-found,unused-ignore]
            StatusPublisher,
        )
    except ImportError as error:
        log.error("status publishing is not available (%s); running without it", error)
        return None
    publisher: Publisher = StatusPublisher(
        target=target,
        worker_name=worker.config.name,
        report=worker.report,
        on_spec_workers=worker.resize,
    )
    publisher.start()
    return publisher


def report_line(worker: Worker, *, final: bool, elapsed: float) -> str:
    """One JSON line: the WorkerReport plus the extras `w5xde local` and the tests read."""
    line: dict[str, Any] = {
        "name": worker.config.name,
        "final": final,
        "elapsedSeconds": round(elapsed, 3),
        "report": worker.report().model_dump(mode="json", by_alias=True),
        "extras": worker.extras(),
    }
    received, sent = worker.totals()
    line["totals"] = {
        "networkSeconds": round(received.network_seconds + sent.network_seconds, 4),
        "compressionSeconds": round(received.compression_seconds + sent.compression_seconds, 4),
        "sentWireBytes": sent.wire_bytes,
    }
    return json.dumps(line, separators=(",", ":"))


def run_worker_process(*, config_file: str | None, report_interval: float) -> int:
    """`w5xde worker`: exit 2 for bad config, 1 if the worker cannot start, else 0."""
    try:
        config = load_worker_config(config_file=config_file)
        key = load_cluster_key()
    except ConfigError as error:
        print(f"w5xde worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_mode)
    try:
        worker = Worker(config, key)
    except ValueError as error:
        print(f"w5xde worker: {error}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        worker.start()
    except OSError as error:
        print(f"w5xde worker: cannot listen: {error}", file=sys.stderr)
        return EXIT_FAILED
    started = time.monotonic()
    metrics = None
    if config.metrics_port:
        from w5xde.worker.metrics import MetricsServer

        try:
            metrics = MetricsServer(worker, config.listen_host, config.metrics_port)
            metrics.start()
        except OSError as error:
            log.error("metrics port %d unavailable: %s", config.metrics_port, error)
    publisher = _status_publisher(worker, config.status) if config.status else None

    def emit_progress() -> None:
        if report_interval > 0:
            _print_line(report_line(worker, final=False, elapsed=_since(started)))

    deadline = started + config.duration_seconds if config.duration_seconds else None
    tick = report_interval if report_interval > 0 else 1.0
    while not stop.is_set():
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        if stop.wait(tick if remaining is None else min(tick, remaining)):
            break
        emit_progress()
    elapsed = _since(started)
    worker.stop()
    if publisher is not None:
        publisher.stop()
    if metrics is not None:
        metrics.stop()
    if report_interval > 0:
        _print_line(report_line(worker, final=True, elapsed=elapsed))
    return EXIT_OK


def _since(started: float) -> float:
    return time.monotonic() - started


def _print_line(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
