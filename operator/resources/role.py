"""The workers' Role: publish their own entries on this cluster's status, nothing else."""

from __future__ import annotations

from typing import Any

from w5xde.api.v1alpha1 import GROUP, PLURAL
from w5xde.operator.resources.metadata import ClusterRef, object_meta


def render_role(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": object_meta(cluster, cluster.worker_account),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [cluster.name],
                "verbs": ["get", "patch"],
            }
        ],
    }
