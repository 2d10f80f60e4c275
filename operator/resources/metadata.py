"""Names, labels and owner references shared by every owned object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from w5xde.api.v1alpha1 import API_VERSION, KIND

APP_NAME = "w5xde"
MANAGED_BY = "w5xde-operator"
COMPONENT = "worker"
CLUSTER_LABEL = "w5xde.io/cluster"
TEMPLATE_HASH_ANNOTATION = "w5xde.io/template-hash"
TEMPLATE_WORKERS_ANNOTATION = "w5xde.io/template-workers"
#: The label the chart's node-tuning DaemonSet puts on nodes it has tuned.
NODE_TUNED_LABEL = "w5xde.io/node-tuned"
SECRET_KEY_FIELD = "key"  # noqa: S105 - the name of the Secret's data field


@dataclass(frozen=True)
class ClusterRef:
    """Which CompressionCluster the objects belong to: enough for names and ownership."""

    name: str
    namespace: str
    uid: str
    generation: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClusterRef:
        metadata = body["metadata"]
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata["uid"],
            generation=int(metadata.get("generation", 0)),
        )

    @property
    def worker_account(self) -> str:
        return f"{self.name}-worker"

    @property
    def key_secret(self) -> str:
        return f"{self.name}-key"

    @property
    def ca_secret(self) -> str:
        """The cluster CA's certificate and key: read by the operator only, never mounted."""
        return f"{self.name}-ca"

    @property
    def trust_bundle(self) -> str:
        """The ConfigMap with the CA certificate the workers trust."""
        return f"{self.name}-ca"

    @property
    def run_config(self) -> str:
        """The ConfigMap with the bounded run's deadline, read by workers as they start."""
        return f"{self.name}-run"

    @property
    def service(self) -> str:
        return self.name

    @property
    def statefulset(self) -> str:
        return self.name

    @property
    def network_policy(self) -> str:
        return self.name

    def worker_service(self, index: int) -> str:
        """Worker INDEX's own ClusterIP Service (`network.path: service`): named as the pod,
        because a peer's expected name is the first label of the address it dials."""
        return f"{self.name}-{index}"

    @property
    def cluster_id(self) -> str:
        return f"{self.namespace}/{self.name}"


def selector_labels(cluster: ClusterRef) -> dict[str, str]:
    """The labels that pick this cluster's worker pods (immutable in a StatefulSet)."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": cluster.name,
        "app.kubernetes.io/component": COMPONENT,
    }


def selector_string(cluster: ClusterRef) -> str:
    """`selector_labels` as the scale subresource publishes them (`status.selector`)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(cluster).items()))


def common_labels(cluster: ClusterRef) -> dict[str, str]:
    return {
        **selector_labels(cluster),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        CLUSTER_LABEL: cluster.name,
    }


def owner_reference(cluster: ClusterRef) -> dict[str, Any]:
    """Makes the cluster the controller of the object, so deleting it collects everything."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cluster.name,
        "uid": cluster.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    cluster: ClusterRef, name: str, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cluster.namespace,
        "labels": common_labels(cluster),
        "ownerReferences": [owner_reference(cluster)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
