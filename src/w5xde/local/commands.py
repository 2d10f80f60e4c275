"""`w5xde local` (N workers on loopback): its subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register `w5xde local`."""
    from w5xde.local.arguments import add_local_arguments

    local = subparsers.add_parser(
        "local",
        help="run N workers as local processes on loopback and print their figures",
        description="Run the same workers locally (no Kubernetes) and print the run's figures.",
    )
    add_local_arguments(local)
    local.set_defaults(handler=_run_local)


def _run_local(args: argparse.Namespace) -> int:
    from w5xde.local.run import run_local

    try:
        return run_local(args)
    except KeyboardInterrupt:  # pragma: no cover - run_local handles Ctrl-C itself
        print("interrupted", file=sys.stderr)
        return 130
