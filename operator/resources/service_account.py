"""The workers' ServiceAccount: a pod identity of their own, with no permissions and no
token mounted (workers never call the API server; the operator pulls their reports)."""

from __future__ import annotations

from typing import Any

from w5xde.operator.resources.metadata import ClusterRef, object_meta


def render_service_account(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(cluster, cluster.worker_account),
        "automountServiceAccountToken": False,
    }
