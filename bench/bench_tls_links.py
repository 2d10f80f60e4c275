"""What mutual TLS costs on a shaped link: a worker pair across a tbf-shaped veth
between two network namespaces, TLS on and off in alternating order (root).

    .venv/bin/python bench/bench_tls_links.py 400      # Mbit/s; 0 = unshaped

Prints one line per run and a JSON summary; the figures are whole-run averages per
worker (raw bytes verified / the worker's elapsed time), so TLS's slower start counts.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from netns.w5t_bed import Bed, start_worker
from w5xde.local.run import issue_identities

PORT = 7400
SECONDS = 10


def main() -> int:
    mbit = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    bed = Bed(3)
    results: dict[str, list[float]] = {"tls": [], "plain": []}
    try:
        first, second, _ = bed.namespaces
        if mbit:
            for namespace in (first, second):
                namespace.exec(
                    "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                    "rate", f"{mbit}mbit", "burst", str(max(1600, mbit * 125)),
                    "latency", "50ms",
                )  # fmt: skip
        peers = [f"{first.address}:{PORT}", f"{second.address}:{PORT}"]
        for _ in range(2):
            for tls in (True, False):
                identities = issue_identities(["s-0", "s-1"], Path(tempfile.mkdtemp()))
                key = secrets.token_hex(32)
                workers = []
                for index, namespace in enumerate((first, second)):
                    extra: dict[str, object] = {
                        "workload": {"batchBytes": 65536},
                        "compression": {"level": 1},
                        "durationSeconds": SECONDS,
                    }
                    if tls:
                        extra["tls"] = identities[f"s-{index}"]
                    workers.append(
                        start_worker(
                            namespace, name=f"s-{index}", peers=peers, key=key, extra=extra
                        )
                    )
                finals = []
                for worker in workers:
                    worker.process.wait(SECONDS + 40)
                    for reader in worker.readers:
                        reader.join(10)
                    finals.append([line for line in worker.lines if line.get("final")][-1])
                raw = sum(f["report"]["rawBytes"] for f in finals)
                elapsed = sum(f["elapsedSeconds"] for f in finals)
                lost = sum(f["report"]["lostBatches"] for f in finals)
                rate = round(raw / elapsed / 1e6, 1)
                results["tls" if tls else "plain"].append(rate)
                print(f"{mbit} Mbit/s  tls={'on ' if tls else 'off'}  {rate} MB/s raw  lost {lost}")
    finally:
        bed.close()
    print(json.dumps({"mbit": mbit, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
