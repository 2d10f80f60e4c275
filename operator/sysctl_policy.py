"""Which sysctls a worker pod gets, and which the cluster would refuse to run.

A pod with a sysctl the kubelet does not allow never starts (SysctlForbidden), so the
operator decides up front and reports `Degraded` instead of leaving a Pending pod.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from w5xde.api.v1alpha1 import AUTO_BUFFER_CAP_BYTES, NetworkSpec

TCP_RMEM = "net.ipv4.tcp_rmem"
TCP_WMEM = "net.ipv4.tcp_wmem"

#: The kubelet's safe sysctls and the Kubernetes minor version that made each safe
#: (kubernetes.io/docs/tasks/administer-cluster/sysctl-cluster; PodSecurity baseline).
SAFE_SYSCTLS_SINCE: dict[str, tuple[int, int]] = {
    "kernel.shm_rmid_forced": (1, 0),
    "net.ipv4.ip_local_port_range": (1, 0),
    "net.ipv4.tcp_syncookies": (1, 0),
    "net.ipv4.ping_group_range": (1, 18),
    "net.ipv4.ip_unprivileged_port_start": (1, 22),
    "net.ipv4.ip_local_reserved_ports": (1, 27),
    "net.ipv4.tcp_keepalive_time": (1, 29),
    "net.ipv4.tcp_fin_timeout": (1, 29),
    "net.ipv4.tcp_keepalive_intvl": (1, 29),
    "net.ipv4.tcp_keepalive_probes": (1, 29),
    TCP_RMEM: (1, 32),
    TCP_WMEM: (1, 32),
}

#: Kernel defaults for the min and default columns of tcp_rmem / tcp_wmem.
_TCP_MEM_FLOOR = {TCP_RMEM: (4096, 131072), TCP_WMEM: (4096, 16384)}


@dataclass(frozen=True)
class SysctlPlan:
    """The pod's sysctls, what was refused (unsafe) and what was left out (old server)."""

    sysctls: tuple[tuple[str, str], ...] = ()
    refused: tuple[str, ...] = ()
    omitted: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def pod_sysctls(self) -> list[dict[str, str]]:
        return [{"name": name, "value": value} for name, value in self.sysctls]


def tcp_mem_value(name: str, buffer_bytes: int) -> str:
    """ "min default max" with the max raised to the requested socket buffer."""
    minimum, default = _TCP_MEM_FLOOR[name]
    return f"{minimum} {default} {max(buffer_bytes, default)}"


def is_safe(name: str, server: tuple[int, int]) -> bool:
    since = SAFE_SYSCTLS_SINCE.get(name)
    return since is not None and server >= since


def plan_sysctls(
    network: NetworkSpec,
    server: tuple[int, int],
    allowed_unsafe: Sequence[str] = (),
) -> SysctlPlan:
    """The sysctls for the worker pods on a server of version `server` (major, minor).

    `allowed_unsafe` holds the kubelet's `--allowed-unsafe-sysctls` patterns, if the
    cluster admin told the operator about them; anything else unsafe is refused.
    """
    wanted: dict[str, str] = {}
    omitted: list[str] = []
    # `auto` keeps autotuning: the sysctls give it room up to the cap the worker may ask for.
    buffer_bytes = AUTO_BUFFER_CAP_BYTES if network.auto_buffers else network.fixed_buffer_bytes
    if buffer_bytes > 0:
        for name in (TCP_RMEM, TCP_WMEM):
            if is_safe(name, server):
                wanted[name] = tcp_mem_value(name, buffer_bytes)
            else:
                omitted.append(name)
    wanted.update(network.sysctls)  # an explicit value wins over the derived one
    refused = [
        name
        for name in network.sysctls
        if not is_safe(name, server)
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed_unsafe)
    ]
    omitted = [name for name in omitted if name not in network.sysctls]
    return SysctlPlan(
        sysctls=tuple(sorted(wanted.items())),
        refused=tuple(sorted(refused)),
        omitted=tuple(omitted),
    )


def parse_server_version(major: str, minor: str) -> tuple[int, int]:
    """(1, 32) from the /version fields, which may carry a '+' (e.g. "32+")."""
    digits = "".join(char for char in minor if char.isdigit())
    return int("".join(char for char in major if char.isdigit()) or 0), int(digits or 0)
