"""Node objects and their Leases: what makes the control plane believe the nodes are alive."""

from __future__ import annotations

import logging
import platform
from typing import Any

from kubernetes.client.exceptions import ApiException

from testbed.nodeagent.kubeapi import Kube, now_micro, now_rfc3339
from testbed.paths import BRIDGE_IP

log = logging.getLogger("nodeagent.nodes")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
CAPACITY = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}


def pod_cidr(index: int) -> str:
    return f"10.244.{index + 1}.0/24"


def node_object(
    name: str,
    index: int,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The Node the agent registers; a second agent adds its own labels and taints."""
    spec: dict[str, Any] = {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)]}
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "w5xde.io/testbed-node": "true",
                **(labels or {}),
            },
        },
        "spec": spec,
    }


def register(kube: Kube, name: str, index: int) -> None:
    body = node_object(name, index)
    try:
        kube.core.create_node(body, _preload_content=False)
    except ApiException as error:
        if error.status != 409:
            raise
    report_status(kube, name)


def report_status(kube: Kube, name: str) -> None:
    now = now_rfc3339()

    def condition(kind: str, status: str, reason: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": reason,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    status = {
        "capacity": CAPACITY,
        "allocatable": CAPACITY,
        "addresses": [
            {"type": "InternalIP", "address": BRIDGE_IP},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            condition("Ready", "True", "KubeletReady"),
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kernelVersion": platform.release(),
            "osImage": "w5xde test bed",
            "kubeletVersion": "w5xde-nodeagent",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "process://",
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }
    kube.core.patch_node_status(name, {"status": status}, _preload_content=False)


def renew_lease(kube: Kube, name: str) -> None:
    try:
        kube.coordination.patch_namespaced_lease(
            name,
            LEASE_NAMESPACE,
            {"spec": {"renewTime": now_micro(), "holderIdentity": name}},
            _preload_content=False,
        )
        return
    except ApiException as error:
        if error.status != 404:
            raise
    node = kube.core.read_node(name)
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        },
    }
    kube.coordination.create_namespaced_lease(LEASE_NAMESPACE, body, _preload_content=False)
    log.info("lease created for %s", name)
