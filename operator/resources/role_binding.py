"""Binds the workers' Role to their ServiceAccount."""

from __future__ import annotations

from typing import Any

from w5xde.operator.resources.metadata import ClusterRef, object_meta


def render_role_binding(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": object_meta(cluster, cluster.worker_account),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": cluster.worker_account,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": cluster.worker_account,
                "namespace": cluster.namespace,
            }
        ],
    }
