"""Two worker containers from the built image, each in its own network namespace.

The namespaces `w5i-a` and `w5i-b` hang off the bridge `w5i-br0` (no address on the
host side: the traffic stays between the two namespaces). Each container joins its
namespace with `--network ns:`, runs non-root on a read-only root filesystem with
every capability dropped, and the pod sysctls are set on the namespace beforehand,
as a kubelet does for a pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from images.containers import PODMAN, hardened_args, image_ref, podman

pytestmark = [pytest.mark.images, pytest.mark.netns]

BRIDGE = "w5i-br0"
NAMESPACES = {"w5i-a": "10.232.0.11", "w5i-b": "10.232.0.12"}
PORT = 7070
METRICS_PORT = 9090
RUN_SECONDS = 8
#: Bound on a container's start on a loaded machine (0.5 s when idle).
STARTUP_LIMIT = 60
KEY = "w5i-exchange-key-0123456789"


def ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _remove_network() -> None:
    for index, name in enumerate(NAMESPACES):
        ip("link", "del", f"w5i-veth{index}", check=False)
        ip("netns", "del", name, check=False)
    ip("link", "del", BRIDGE, check=False)


@pytest.fixture
def two_namespaces() -> Iterator[dict[str, str]]:
    _remove_network()
    try:
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("link", "set", BRIDGE, "up")
        for index, (name, address) in enumerate(NAMESPACES.items()):
            veth = f"w5i-veth{index}"
            ip("netns", "add", name)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", veth, "master", BRIDGE, "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            # A pod sysctl, applied to the namespace the way a kubelet does.
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                 "net.ipv4.tcp_rmem=4096 131072 8388608"],
                check=True, capture_output=True,
            )  # fmt: skip
        yield dict(NAMESPACES)
    finally:
        _remove_network()


def _worker_command(name: str, netns: str, peers: list[str]) -> list[str]:
    config = {
        "name": name,
        "clusterId": "w5i",
        "peers": peers,
        "workers": len(peers),
        "durationSeconds": RUN_SECONDS,
        "metricsPort": METRICS_PORT,
        "workload": {"batchBytes": 65536, "profile": "json-logs"},
        "compression": {"level": 1},
    }
    return [
        *PODMAN, "run", "--rm", f"--name={name}", f"--network=ns:/run/netns/{netns}",
        *hardened_args(), f"--env=W5XDE_CONFIG={json.dumps(config)}",
        f"--env=W5XDE_CLUSTER_KEY={KEY}", image_ref("worker"), "worker", "--report-interval=1",
    ]  # fmt: skip


def _scrape_metrics(
    netns: str, address: str, target: subprocess.Popen[str], deadline: float
) -> str:
    """GET /metrics from inside the other namespace: the endpoint must face the pod network.

    Retried while the target runs: on a busy machine its container takes a while to listen.
    """
    fetch = (
        "import sys, urllib.request;"
        f"sys.stdout.write(urllib.request.urlopen('http://{address}:{METRICS_PORT}/metrics',"
        " timeout=3).read().decode())"
    )
    while True:
        result = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", fetch],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        if result.returncode == 0 or time.monotonic() > deadline or target.poll() is not None:
            break
        time.sleep(0.5)
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
    return result.stdout


def _final_report(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    finals = [line for line in lines if line.get("final")]
    assert finals, stdout
    report: dict[str, Any] = finals[-1]
    return report


def test_two_worker_containers_exchange_batches_both_ways(two_namespaces: dict[str, str]) -> None:
    peers = [f"{address}:{PORT}" for address in two_namespaces.values()]
    names = ["w5i-0", "w5i-1"]
    for name in names:
        podman("rm", "--force", name)
    processes = [
        subprocess.Popen(
            _worker_command(name, netns, peers),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, netns in zip(names, two_namespaces, strict=True)
    ]
    try:
        metrics = _scrape_metrics(
            "w5i-a", two_namespaces["w5i-b"], processes[1], time.monotonic() + STARTUP_LIMIT
        )
        outputs = [
            process.communicate(timeout=RUN_SECONDS + STARTUP_LIMIT) for process in processes
        ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for name in names:
            podman("rm", "--force", name)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert "w5xde_lost_batches" in metrics
    reports = [_final_report(stdout) for stdout, _ in outputs]
    for line in reports:
        report, extras = line["report"], line["extras"]
        assert report["batches"] > 50, line  # received and verified from the other worker
        assert extras["sentBatches"] > 50, line
        assert report["lostBatches"] == report["corruptBatches"] == 0, line
        assert report["rawBytes"] / report["wireBytes"] > 1.5, line
        assert report["socketBuffer"]["effectiveReceive"] > 0, line
    # Each one received every batch the other sent, except what was still
    # unacknowledged when the first of the two stopped.
    for receiver, sender in ((0, 1), (1, 0)):
        sent = reports[sender]["extras"]["sentBatches"]
        in_flight = reports[sender]["extras"]["unackedBatches"]
        assert reports[receiver]["report"]["batches"] >= sent - in_flight, reports
