"""The headless Service that gives every worker a stable DNS name for its peers."""

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
