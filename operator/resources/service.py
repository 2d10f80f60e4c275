"""The headless Service that gives every worker a stable DNS name for its peers, and,
with `network.path: service`, one ClusterIP Service per worker so that every link goes
through kube-proxy's translation (the peer dials the Service's ClusterIP)."""

from __future__ import annotations

from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.contract.endpoints import METRICS_PORT, METRICS_PORT_NAME
from w5xde.operator.resources.metadata import (
    ClusterRef,
    object_meta,
    selector_labels,
)


def render_service(cluster: ClusterRef, spec: CompressionClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(cluster, cluster.service),
        "spec": {
            "clusterIP": "None",
            # Peers dial each other while starting up, before anyone is Ready.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(cluster),
            "ports": [
                {"name": "data", "port": spec.network.port, "targetPort": "data"},
                {"name": METRICS_PORT_NAME, "port": METRICS_PORT, "targetPort": METRICS_PORT_NAME},
            ],
        },
    }


#: The label the StatefulSet controller puts on each pod: its own name.
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"


def render_worker_service(
    cluster: ClusterRef, spec: CompressionClusterSpec, index: int
) -> dict[str, Any]:
    """Worker INDEX's ClusterIP Service: its data port only, selecting that one pod."""
    pod = f"{cluster.name}-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(cluster, cluster.worker_service(index)),
        "spec": {
            "type": "ClusterIP",
            # Peers dial each other before anyone is Ready (readiness needs a peer):
            # the endpoint stays routable while the pod starts.
            "publishNotReadyAddresses": True,
            "selector": {**selector_labels(cluster), POD_NAME_LABEL: pod},
            "ports": [{"name": "data", "port": spec.network.port, "targetPort": "data"}],
        },
    }
