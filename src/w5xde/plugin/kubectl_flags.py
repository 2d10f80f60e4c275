"""The flags every kubectl command takes, accepted anywhere on the line.

kubectl's global flags (`-n`, `--context`, `--kubeconfig`) work before or after the
subcommand.  argparse only knows a flag where it was added, so the same flags are
added to the root parser (with their real defaults) and to every subcommand with
`SUPPRESS` defaults: a subcommand sets the value only when the flag is given after
it, and never overwrites one given before it.  Exit codes are kubectl's and
`kubectl cnpg`'s: 0 ok, 1 failure, 2 usage, and 3 for a run that missed its
expectations.
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_EXPECTATION_MISSED = 3

#: The attributes the global flags set, with their defaults on the root parser.
GLOBAL_DEFAULTS: dict[str, Any] = {"namespace": None, "kubeconfig": None, "context": None}


def global_flags(*, suppress: bool) -> argparse.ArgumentParser:
    """A parent parser with -n/--namespace, --kubeconfig and --context."""
    flags = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    flags.add_argument(
        "-n", "--namespace", help="the namespace (default: the context's)", **default
    )
    flags.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)", **default
    )
    flags.add_argument("--context", help="kubeconfig context (default: the current one)", **default)
    return flags


def add_command(
    commands: argparse._SubParsersAction[Any], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand that also takes the global flags (after its own name)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, parents=[global_flags(suppress=True)], **kwargs
    )
    return parser


def add_output(parser: argparse.ArgumentParser, choices: tuple[str, ...], default: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=choices,
        default=default,
        help=f"output format: {' | '.join(choices)} (default {default})",
    )
