"""Real faults on the test bed: a node frozen, the nodes' pod subnets partitioned, the
API server killed and started again.

What each does is what the machine really does to a cluster: a frozen node keeps its
TCP connections open and answers nothing (SIGSTOP of its kubelet, containerd and shims
plus the cgroup freezer for its containers); a partition drops packets between the
nodes' pod subnets in the host's forward path (nftables), as a broken switch would; an
API server that dies loses its watches and comes back on the same address.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from testbed import controlplane, nodes
from testbed.nodes import Node

FREEZER = Path("/sys/fs/cgroup/freezer")
#: The nftables table a partition adds (and `cluster down` removes).
PARTITION_TABLE = "w5n-partition"


def _shim_pids(node: Node) -> list[int]:
    """containerd's shims for `node` (they outlive containerd, so not in its group)."""
    found = []
    marker = str(node.socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in command and marker in command:
            found.append(int(entry.name))
    return found


def _node_processes(node: Node) -> tuple[list[int], list[int]]:
    """(process groups: kubelet and containerd, single pids: the shims)."""
    pids = controlplane._read_state()
    groups = [pids[f"kubelet-{node.short}"], pids[f"containerd-{node.short}"]]
    return groups, _shim_pids(node)


def _freezer_state(node: Node) -> Path:
    return FREEZER / node.name / "freezer.state"


@contextlib.contextmanager
def frozen(node: Node) -> Iterator[None]:
    """The node's agents and every container on it stopped; thawed on the way out."""
    groups, shims = _node_processes(node)
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    _freezer_state(node).write_text("FROZEN")
    try:
        yield
    finally:
        thaw(node, groups, shims)


def thaw(node: Node, groups: list[int] | None = None, shims: list[int] | None = None) -> None:
    if groups is None or shims is None:
        groups, shims = _node_processes(node)
    with contextlib.suppress(OSError):
        _freezer_state(node).write_text("THAWED")
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGCONT)


def _subnet(node: Node) -> str:
    first, _ = node.pod_range
    return first.rsplit(".", 1)[0] + ".0/24"


def _nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)


@contextlib.contextmanager
def partitioned(first: Node, second: Node) -> Iterator[None]:
    """Packets between the two nodes' pod subnets dropped, both ways (forward path)."""
    a, b = _subnet(first), _subnet(second)
    _nft(
        f"""
        table ip {PARTITION_TABLE} {{
            chain forward {{
                type filter hook forward priority -10; policy accept;
                ip saddr {a} ip daddr {b} drop
                ip saddr {b} ip daddr {a} drop
            }}
        }}
        """
    )
    try:
        yield
    finally:
        heal()


def heal() -> None:
    subprocess.run(
        ["nft", "delete", "table", "ip", PARTITION_TABLE], capture_output=True, check=False
    )


def restart_apiserver(down_seconds: float = 5.0, timeout: float = 90.0) -> None:
    """SIGKILL the kube-apiserver, wait, start it again with the same command line."""
    pids = controlplane._read_state()
    pid = pids["kube-apiserver"]
    argv = [
        part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part
    ]
    os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    time.sleep(down_seconds)
    pids["kube-apiserver"] = controlplane._spawn("kube-apiserver", argv)
    controlplane._write_state(pids)
    deadline = time.monotonic() + timeout
    while not controlplane.apiserver_ready():
        if time.monotonic() > deadline:
            raise TimeoutError("kube-apiserver did not come back")
        time.sleep(0.5)


def node_of_pod(pod: dict[str, object]) -> Node:
    spec = pod.get("spec")
    assert isinstance(spec, dict)
    return nodes.node_named(str(spec["nodeName"]))
