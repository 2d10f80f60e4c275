"""`w5xde operator` and `w5xde crd` (placeholder until the operator lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the operator's subcommands."""
