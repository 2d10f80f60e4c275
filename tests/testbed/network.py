"""The pod network: one bridge on the host, one network namespace and veth per pod.

Pods reach each other over the bridge (one L2 segment, 10.244.0.0/16) and the
apiserver at the bridge address. Everything is named with the `w5n-` prefix (veths
`w5v...`, which must stay under 15 characters) so cleanup finds exactly ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from testbed.paths import BRIDGE, BRIDGE_IP, NAME_PREFIX, POD_NETWORK_PREFIXLEN

VETH_PREFIX = "w5v"
NETNS_ETC = Path("/etc/netns")


class NetworkError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def ensure_bridge() -> None:
    if ip("link", "show", BRIDGE, check=False).returncode != 0:
        ip("link", "add", BRIDGE, "type", "bridge")
    addresses = ip("-j", "addr", "show", BRIDGE).stdout
    if BRIDGE_IP not in addresses:
        ip("addr", "add", f"{BRIDGE_IP}/{POD_NETWORK_PREFIXLEN}", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def netns_name(pod_uid: str) -> str:
    return f"{NAME_PREFIX}{pod_uid}"


def veth_name(pod_uid: str) -> str:
    return VETH_PREFIX + hashlib.sha256(pod_uid.encode()).hexdigest()[:11]


def create_pod_network(pod_uid: str, pod_ip: str, hosts_text: str, resolv_text: str) -> str:
    """Create the pod's namespace with eth0 on the bridge; returns the namespace name."""
    netns = netns_name(pod_uid)
    delete_pod_network(pod_uid)
    etc = NETNS_ETC / netns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts_text)
    (etc / "resolv.conf").write_text(resolv_text)
    ip("netns", "add", netns)
    veth = veth_name(pod_uid)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", BRIDGE, "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "addr", "add", f"{pod_ip}/{POD_NETWORK_PREFIXLEN}", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "route", "add", "default", "via", BRIDGE_IP)
    return netns


def write_hosts(pod_uid: str, hosts_text: str) -> None:
    """Rewrite in place: `ip netns exec` bind-mounts this very inode onto /etc/hosts."""
    path = NETNS_ETC / netns_name(pod_uid) / "hosts"
    if not path.exists():
        return
    if path.read_text() == hosts_text:
        return
    with path.open("r+") as handle:
        handle.write(hosts_text)
        handle.truncate()


def delete_pod_network(pod_uid: str) -> None:
    netns = netns_name(pod_uid)
    ip("link", "del", veth_name(pod_uid), check=False)
    ip("netns", "del", netns, check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def delete_all() -> None:
    """Remove every namespace, veth and netns config of ours, and the bridge."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NAME_PREFIX):
            # Container processes outlive a crashed agent; whatever runs in our
            # namespaces is ours.
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)
    for link in json.loads(ip("-j", "link", "show").stdout or "[]"):
        ifname = str(link.get("ifname", ""))
        if ifname.startswith(VETH_PREFIX) or ifname.startswith(NAME_PREFIX):
            ip("link", "del", ifname, check=False)
    if NETNS_ETC.exists():
        for entry in NETNS_ETC.iterdir():
            if entry.name.startswith(NAME_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
