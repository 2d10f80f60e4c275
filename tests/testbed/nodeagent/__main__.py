"""`python -m testbed.nodeagent --kubeconfig K --node A --node B` (started by the launcher)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from testbed.nodeagent.agent import Agent
from testbed.nodeagent.kubeapi import Kube
from testbed.nodeagent.process_runtime import ProcessRuntime
from testbed.nodeagent.runtime import ContainerRuntime


def main() -> int:
    parser = argparse.ArgumentParser(prog="nodeagent")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node", action="append", required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--runtime",
        choices=("process", "podman"),
        default="process",
        help="process: the venv's w5xde; podman: the built images (image mode)",
    )
    parser.add_argument("--first-node-index", type=int, default=0, metavar="N")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    runtime: ContainerRuntime = ProcessRuntime()
    if args.runtime == "podman":
        from testbed.nodeagent.podman_runtime import PodmanRuntime

        runtime = PodmanRuntime()
    agent = Agent(Kube(args.kubeconfig), tuple(args.node), runtime, args.first_node_index)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("nodeagent").info("signal %d: stopping pods", signum)
        agent.stop()
        done.set()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
