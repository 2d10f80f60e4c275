"""`tests/testbed/cli.py up|down|env|status`: the test bed from a shell (`make cluster-up`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script: make `testbed` importable from tests/ (never the repo root, whose
# `operator/` folder would shadow the standard library).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed import controlplane
from testbed.paths import ADMIN_KUBECONFIG, BIN_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "env", "status"])
    args = parser.parse_args(argv)
    if args.action == "up":
        missing = controlplane.missing_tools()
        if missing and controlplane.running() is None:
            print("testbed up: missing tools:\n  " + "\n  ".join(missing), file=sys.stderr)
            return 2
        try:
            controlplane.acquire(controlplane.MANUAL_USER)
        except controlplane.ControlPlaneError as error:
            print(f"testbed up failed: {error}", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={ADMIN_KUBECONFIG}")
        return 0
    if args.action == "down":
        controlplane.force_down()
        return 0
    if args.action == "env":
        print(f"export KUBECONFIG={ADMIN_KUBECONFIG}")
        print(f'export PATH="{BIN_DIR}:$PATH"')
        return 0
    state = controlplane.running()
    print("running" if state else "not running")
    return 0 if state else 1


if __name__ == "__main__":
    sys.exit(main())
