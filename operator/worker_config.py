"""The worker's config (W5XDE_CONFIG) rendered from a spec, as the worker will parse it.

The pod name and node come from the downward API and the key from the Secret, so one
config serves every pod of the StatefulSet; `contract.worker_config.settings_for_cluster`
is the one renderer (this module only names the cluster's peers).
"""

from __future__ import annotations

import json
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.contract.worker_config import WorkerSettings, settings_for_cluster
from w5xde.operator.resources.metadata import ClusterRef


def peer_pattern(cluster: ClusterRef, port: int) -> str:
    """Every worker's stable DNS name through the headless Service."""
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
        peer_pattern=peer_pattern(cluster, spec.network.port),
        workers=workers,
    )


def render_worker_config(
    cluster: ClusterRef, spec: CompressionClusterSpec, workers: int
) -> dict[str, Any]:
    """The settings as the JSON data the pod template carries."""
    return worker_settings(cluster, spec, workers).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def worker_config_json(cluster: ClusterRef, spec: CompressionClusterSpec, workers: int) -> str:
    return json.dumps(render_worker_config(cluster, spec, workers), sort_keys=True)
