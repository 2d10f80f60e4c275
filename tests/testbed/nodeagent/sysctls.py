"""Pod sysctls: the kubelet's default allow-list, and applying them inside the pod netns.

The list is the kubelet's `SafeSysctlAllowlist` of Kubernetes v1.37
(pkg/kubelet/sysctl/safe_sysctls.go); a pod asking for anything else is refused
with reason `SysctlForbidden`, as a kubelet without `--allowed-unsafe-sysctls` does.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "net.ipv4.tcp_slow_start_after_idle",
        "net.ipv4.tcp_notsent_lowat",
    }
)


def canonical(name: str) -> str:
    """Kubernetes accepts `/` as separator too (net/ipv4/tcp_rmem)."""
    return name.replace("/", ".")


def forbidden(sysctls: Iterable[dict[str, str]]) -> list[str]:
    return [s["name"] for s in sysctls if canonical(s["name"]) not in SAFE_SYSCTLS]


def apply_in_netns(netns: str, sysctls: Iterable[dict[str, str]]) -> list[str]:
    """Set each net.* sysctl inside the namespace; returns the errors (empty if all applied).

    kernel.shm_rmid_forced belongs to the IPC namespace, which process containers
    share with the host, so it is accepted but not applied.
    """
    errors = []
    for sysctl in sysctls:
        name = canonical(sysctl["name"])
        if not name.startswith("net."):
            continue
        result = subprocess.run(
            ["ip", "netns", "exec", netns, "sysctl", "-w", f"{name}={sysctl.get('value', '')}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            errors.append(f"{name}: {result.stderr.strip()}")
    return errors
