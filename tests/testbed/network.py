"""The pod network's host side: the bridge `w5n-br0` with the API server's address.

The nodes' CNI bridge plugin attaches each pod's veth to this bridge (one L2 segment,
10.244.0.0/16) and creates the pods' network namespaces under containerd's state
directory. The bridge exists before the API server starts, because the API server
listens on its address (10.244.0.1), the one address both pods and host reach.
Cleanup also removes any `w5n-` namespace or link an older bed left.
"""

from __future__ import annotations

import contextlib
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


def delete_all() -> None:
    """Remove every namespace, veth and netns config of ours, and the bridge."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NAME_PREFIX):
            # Whatever runs in our namespaces is ours.
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
