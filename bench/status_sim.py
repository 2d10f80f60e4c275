"""Simulated workers for `make bench-status`: the product's own report endpoint and HTTP
server, one per pod, bound to each pod's (KWOK-assigned, loopback) IP.

Only the data plane is simulated: counters grow at a steady synthetic rate with a
little noise.  The operator pulls these reports exactly as it pulls real ones.

    python bench/status_sim.py --namespace NS --cluster NAME --shard 0 --shards 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from w5xde.contract.endpoints import METRICS_PORT
from w5xde.contract.report import WorkerReport
from w5xde.worker.metrics import MetricsServer
from w5xde.worker.report_endpoint import ReportEndpoint

RAW_PER_SECOND = 100e6
RATIO = 2.0
BATCH = 65536


class SimulatedWorker:
    """A worker's counters moving at about `RAW_PER_SECOND`, read as a WorkerReport."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.time()
        self.incarnation = os.urandom(6).hex()
        self.workers = 0
        self.requests = 0
        self._rng = random.Random(name)  # noqa: S311 - noise, not secrets
        self._speed = RAW_PER_SECOND * self._rng.uniform(0.8, 1.2)

    def report(self) -> WorkerReport:
        self.requests += 1
        now = time.time()
        raw = int((now - self.started) * self._speed)
        rate = self._speed * self._rng.uniform(0.95, 1.05)
        return WorkerReport(
            name=self.name,
            node="kwok",
            incarnation=self.incarnation,
            generated_at=round(now, 3),
            rate_window_seconds=10,
            workers=self.workers,
            throughput_bytes_per_second=round(rate, 1),
            wire_bytes_per_second=round(rate / RATIO, 1),
            batches_per_second=round(rate / BATCH, 2),
            batches=raw // BATCH,
            raw_bytes=raw,
            wire_bytes=int(raw / RATIO),
            network_seconds=3.0,
            compression_seconds=9.0,
            rss_bytes=60_000_000,
            peers_connected=1,
        )

    def resize(self, workers: int) -> None:
        self.workers = workers


class _NoMetrics:
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("w5xde_simulated", "A simulated worker", value=1)


def _pods(kubectl: list[str], namespace: str) -> dict[str, str]:
    listed = subprocess.run(
        [*kubectl, "get", "pods", "-n", namespace, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if listed.returncode != 0:
        return {}
    pods = {}
    for item in json.loads(listed.stdout)["items"]:
        ip = (item.get("status") or {}).get("podIP")
        if ip and not item["metadata"].get("deletionTimestamp"):
            pods[item["metadata"]["name"]] = ip
    return pods


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    kubectl = [args.kubectl]
    key_text = subprocess.run(
        [*kubectl, "get", "secret", f"{args.cluster}-key", "-n", args.namespace,
         "-o", "jsonpath={.data.key}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    import base64

    key = base64.b64decode(key_text)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    servers: dict[str, MetricsServer] = {}
    while not stop.is_set():
        for name, ip in sorted(_pods(kubectl, args.namespace).items()):
            ordinal = int(name.rsplit("-", 1)[1])
            if ordinal % args.shards != args.shard or name in servers:
                continue
            worker = SimulatedWorker(name)
            endpoint = ReportEndpoint(key, worker.report, worker.resize)
            try:
                server = MetricsServer(
                    _NoMetrics(), lambda: True, ip, METRICS_PORT, report=endpoint
                )
            except OSError as error:
                print(f"status_sim: cannot bind {ip}:{METRICS_PORT}: {error}", file=sys.stderr)
                continue
            server.start()
            servers[name] = server
        print(json.dumps({"serving": len(servers)}), flush=True)
        stop.wait(2.0)
    for server in servers.values():
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
