"""`w5xde worker` (one worker, as in a pod) and `w5xde local` (N workers on loopback)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the worker's subcommands."""
    worker = subparsers.add_parser(
        "worker",
        help="run one worker (config from W5XDE_CONFIG and/or --config)",
        description="Run one worker: stream compressed batches to its peers and report.",
    )
    worker.add_argument("--config", metavar="FILE", help="JSON WorkerConfig (camelCase fields)")
    worker.add_argument(
        "--report-interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="print a JSON report line on stdout this often (used by `w5xde local`)",
    )
    worker.set_defaults(handler=_run_worker)

    from w5xde.worker.local import add_local_arguments

    local = subparsers.add_parser(
        "local",
        help="run N workers as local processes on loopback and print their figures",
        description="Run the same workers locally (no Kubernetes) and print the run's figures.",
    )
    add_local_arguments(local)
    local.set_defaults(handler=_run_local)


def _run_worker(args: argparse.Namespace) -> int:
    from w5xde.worker.openssl_config import prefer_aes128

    prefer_aes128()  # OpenSSL reads its configuration once per process
    from w5xde.worker.process import run_worker_process

    return run_worker_process(config_file=args.config, report_interval=args.report_interval)


def _run_local(args: argparse.Namespace) -> int:
    from w5xde.worker.local import run_local

    try:
        return run_local(args)
    except KeyboardInterrupt:  # pragma: no cover - run_local handles Ctrl-C itself
        print("interrupted", file=sys.stderr)
        return 130
