"""The worker's config (W5XDE_CONFIG) rendered from a spec, as the worker will parse it.

The pod name and node come from the downward API and the key from the Secret, so one
config serves every pod of the StatefulSet; `contract.worker_config.settings_for_cluster`
is the one renderer (this module only names the cluster's peers).
"""

from __future__ import annotations

import json
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec, NetworkPath
from w5xde.contract.worker_config import WorkerSettings, settings_for_cluster
from w5xde.operator.resources.metadata import ClusterRef

#: Pod-level network choices the worker never reads (the peer pattern already says the
#: path): left out of its config, so a worker image older than them still parses it.
POD_LEVEL_NETWORK_FIELDS: set[str] = {"path", "host_network"}


def peer_pattern(cluster: ClusterRef, port: int, path: NetworkPath = NetworkPath.POD) -> str:
    """Every worker's stable DNS name: through the headless Service (the pod's IP), or,
    with `network.path: service`, its own ClusterIP Service (kube-proxy in the path)."""
    if path is NetworkPath.SERVICE:
        # `ClusterRef.worker_service(index)`, with the index left to the worker.
        return f"{cluster.name}-{{index}}.{cluster.namespace}.svc.cluster.local:{port}"
    return (
        f"{cluster.name}-{{index}}.{cluster.service}.{cluster.namespace}.svc.cluster.local:{port}"
    )


def worker_settings(
    cluster: ClusterRef, spec: CompressionClusterSpec, workers: int
) -> WorkerSettings:
    """`workers` is the count the pod template was rendered with; later scaling reaches
    running workers with the operator's requests, not through a new template."""
    return settings_for_cluster(
        spec,
        cluster_id=cluster.cluster_id,
        peer_pattern=peer_pattern(cluster, spec.network.port, spec.network.path),
        workers=workers,
    )


def render_worker_config(
    cluster: ClusterRef, spec: CompressionClusterSpec, workers: int
) -> dict[str, Any]:
    """The settings as the JSON data the pod template carries."""
    return worker_settings(cluster, spec, workers).model_dump(
        mode="json",
        by_alias=True,
        exclude_none=True,
        exclude={"network": POD_LEVEL_NETWORK_FIELDS},
    )


def worker_config_json(cluster: ClusterRef, spec: CompressionClusterSpec, workers: int) -> str:
    return json.dumps(render_worker_config(cluster, spec, workers), sort_keys=True)
