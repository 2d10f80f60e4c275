"""The workers' NetworkPolicy: who may open a connection to a worker pod.

A NetworkPolicy cannot say "pods with the same label value as the target", so the
chart cannot write one policy for every cluster: the operator renders one per cluster.
It restricts ingress only (DNS and the peers' outgoing connections are untouched):

- the data port admits the pods of the same cluster (same namespace, same selector);
- the metrics/report port admits the operator's pods (their namespace AND their
  labels) and every pod of the monitoring namespaces the operator was told about.

Nothing else is admitted.  NetworkPolicies are additive: a user who needs more (an API
server proxy for `kubectl w5xde`, a scraper elsewhere) adds a policy of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.contract.endpoints import METRICS_PORT
from w5xde.operator.resources.metadata import ClusterRef, object_meta, selector_labels

#: The label the API server puts on every namespace (Kubernetes >= 1.22), immutable.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class NetworkPolicyOptions:
    """Who besides the cluster's own pods may reach a worker (the operator's flags).

    `operator_namespace` empty (an operator running outside the cluster, or told
    nothing): no operator peer is admitted.  `operator_pod_labels` empty: every pod of
    `operator_namespace`.
    """

    operator_namespace: str = ""
    operator_pod_labels: Mapping[str, str] = field(default_factory=dict)
    monitoring_namespaces: tuple[str, ...] = ()


def render_network_policy(
    cluster: ClusterRef, spec: CompressionClusterSpec, options: NetworkPolicyOptions
) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = [
        {
            "ports": [{"protocol": "TCP", "port": spec.network.port}],
            "from": [{"podSelector": {"matchLabels": selector_labels(cluster)}}],
        }
    ]
    metrics_peers = metrics_port_peers(options)
    # A rule without peers would admit everyone: leave it out instead.
    if metrics_peers:
        ingress.append(
            {"ports": [{"protocol": "TCP", "port": METRICS_PORT}], "from": metrics_peers}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(cluster, cluster.network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cluster)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def metrics_port_peers(options: NetworkPolicyOptions) -> list[dict[str, Any]]:
    """The operator's pods, then each monitoring namespace once, in the order given."""
    peers: list[dict[str, Any]] = []
    if options.operator_namespace:
        peers.append(
            {
                "namespaceSelector": _namespace(options.operator_namespace),
                "podSelector": {"matchLabels": dict(options.operator_pod_labels)}
                if options.operator_pod_labels
                else {},
            }
        )
    for namespace in dict.fromkeys(options.monitoring_namespaces):
        peers.append({"namespaceSelector": _namespace(namespace)})
    return peers


def _namespace(name: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}}
