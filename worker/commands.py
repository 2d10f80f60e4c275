"""`w5xde worker`: one worker, as in a pod (`w5xde local` is `w5xde.local.commands`)."""

from __future__ import annotations

import argparse
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


def _run_worker(args: argparse.Namespace) -> int:
    from w5xde.worker.openssl_config import prefer_aes128

    prefer_aes128()  # OpenSSL reads its configuration once per process
    from w5xde.worker.process import run_worker_process

    return run_worker_process(config_file=args.config, report_interval=args.report_interval)
