"""The `w5xde` command: one entry point, subcommands contributed by each package.

The worker, `w5xde local` and the operator each own their subcommands
(`w5xde.worker.commands`, `w5xde.local.commands`, `w5xde.operator.commands`); this
module only assembles them, so that `w5xde --version`
or `w5xde local` never pays for importing kopf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from w5xde import __version__

#: Exit code for bad input (argparse uses it too): the user must fix the command line.
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Assemble the top-level parser from the packages' subcommands."""
    from w5xde.local import commands as local_commands
    from w5xde.operator import commands as operator_commands
    from w5xde.worker import commands as worker_commands

    parser = argparse.ArgumentParser(
        prog="w5xde",
        description="Compression clusters on Kubernetes: zstd workers and their operator.",
    )
    parser.add_argument("--version", action="version", version=f"w5xde {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    worker_commands.add_commands(subparsers)
    local_commands.add_commands(subparsers)
    operator_commands.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; each subcommand returns its exit code from `args.handler`."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # The subcommand's usage, not the top level's: `w5xde local --wrkers 2` should
        # show `local`'s options.
        commands = next(
            action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
        )
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    handler = args.handler
    try:
        code: int = handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
