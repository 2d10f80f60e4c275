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

ROOT = Path(__file__).resolve().parents[2]


def next_steps() -> str:
    """The exact commands after `make cluster-up`: the operator from the bed's own
    images (the chart's default `ghcr.io/w5xde/...` images are not published), then a run."""
    venv_bin = ROOT / ".venv" / "bin"
    values = ROOT / "tests" / "chart_values" / "local-images.yaml"
    return "\n".join(
        [
            "",
            "The test bed is up. Next, in this shell:",
            f"  export KUBECONFIG={ADMIN_KUBECONFIG}",
            f'  export PATH="{BIN_DIR}:{venv_bin}:$PATH"     # kubectl, helm, kubectl-w5xde',
            f"  helm install w5xde {ROOT / 'charts' / 'w5xde'} -f {values} \\",
            "    --namespace w5xde-system --create-namespace --wait --timeout 3m",
            "  kubectl w5xde --version                      # the operator is running",
            "  kubectl w5xde run demo --workers 2 --duration 20s --placement crossNode --wait",
            "Stop it with `make cluster-down`.",
        ]
    )


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
        # On stderr: stdout stays `eval`-able; these are for the person at the terminal.
        print(next_steps(), file=sys.stderr)
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
