"""/etc/hosts for a pod: what cluster DNS would answer for pods behind headless services.

There is no DNS server in the test bed; every pod's hosts file lists every pod
that has a hostname and a subdomain naming a headless service in its namespace,
under the full and the short names, plus the service name itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from testbed.paths import CLUSTER_DOMAIN

HEADER = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def _names(host: str, service: str, namespace: str) -> list[str]:
    return [
        f"{host}.{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
        f"{host}.{service}.{namespace}.svc",
        f"{host}.{service}.{namespace}",
        f"{host}.{service}",
    ]


def dns_entries(
    pods: Iterable[dict[str, Any]], headless_services: set[tuple[str, str]]
) -> dict[str, list[tuple[str, list[str]]]]:
    """Per namespace: (ip, names) for every addressable pod, and the service names."""
    entries: dict[str, list[tuple[str, list[str]]]] = {}
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        status, spec, metadata = pod.get("status") or {}, pod["spec"], pod["metadata"]
        pod_ip, subdomain = status.get("podIP"), spec.get("subdomain")
        if not pod_ip or not subdomain or metadata.get("deletionTimestamp"):
            continue
        namespace = metadata["namespace"]
        if (namespace, subdomain) not in headless_services:
            continue
        host = spec.get("hostname") or metadata["name"]
        names = _names(host, subdomain, namespace)
        names += [f"{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{subdomain}.{namespace}.svc"]
        entries.setdefault(namespace, []).append((pod_ip, names))
    return entries


def resolv_conf(namespace: str) -> str:
    """The kubelet's search path; the name server is the pod's own loopback, where nothing
    listens, so a name missing from /etc/hosts fails at once instead of timing out."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"


def hosts_file(
    pod: dict[str, Any], pod_ip: str, entries: dict[str, list[tuple[str, list[str]]]]
) -> str:
    """The pod's own names first (as the kubelet writes them), then its namespace's peers."""
    metadata, spec = pod["metadata"], pod["spec"]
    namespace = metadata["namespace"]
    host = spec.get("hostname") or metadata["name"]
    own = [host]
    if spec.get("subdomain"):
        own = [*_names(host, spec["subdomain"], namespace), host]
    lines = [HEADER, f"{pod_ip}\t{' '.join(own)}\n"]
    lines += [
        f"{ip}\t{' '.join(names)}\n" for ip, names in entries.get(namespace, []) if ip != pod_ip
    ]
    return "".join(lines)
