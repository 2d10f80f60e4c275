"""One real worker process driven over stdin, for the rescale tests.

    MESH_CONFIG=<WorkerConfig JSON> MESH_KEY=... MESH_WORKERS=N python tests/local/mesh_driver.py

Commands, one per line: `resize N` calls `Worker.resize(N)` (what the status path does
when spec.workers changes), `report` prints one JSON line of counters, `stop` drains,
prints a final line and exits.  Nothing here reimplements the worker.
"""

from __future__ import annotations

import json
import os
import sys

from w5xde.worker.config import WorkerConfig
from w5xde.worker.runtime import Worker


def line(worker: Worker, *, final: bool) -> str:
    received, sent = worker.totals()
    outgoing, incoming = worker.streams()
    return json.dumps(
        {
            "final": final,
            "received": received.batches,
            "lost": received.lost_batches,
            "corrupt": received.corrupt_batches,
            "duplicates": received.duplicate_batches,
            "sentAcknowledged": sent.batches,
            "resent": sent.resent_batches,
            "outgoing": outgoing,
            "incoming": incoming,
            "replayBytes": worker.replay_bytes(),
        }
    )


def main() -> int:
    config = WorkerConfig.model_validate_json(os.environ["MESH_CONFIG"])
    worker = Worker(config, os.environ["MESH_KEY"].encode())
    # The cluster may be smaller than the peer list (which names every possible worker).
    worker.resize(int(os.environ["MESH_WORKERS"]))
    worker.start()
    print(json.dumps({"started": True}), flush=True)
    for command in sys.stdin:
        verb, _, argument = command.strip().partition(" ")
        if verb == "resize":
            worker.resize(int(argument))
            print(json.dumps({"resized": int(argument)}), flush=True)
        elif verb == "report":
            print(line(worker, final=False), flush=True)
        elif verb == "stop":
            break
    worker.stop(grace_seconds=2.0)
    print(line(worker, final=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
