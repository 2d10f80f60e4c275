"""`w5xde worker` and `w5xde local` (placeholder until the worker lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the worker's subcommands."""
