"""The worker's config (W5XDE_CONFIG) rendered from a spec, as the worker will parse it.

The pod name and node come from the downward API and the key from the Secret, so one
config serves every pod of the StatefulSet.
"""

from __future__ import annotations

import json
from typing import Any

from w5xde.api.v1alpha1 import (
    CertificateIssuer,
    CompressionClusterSpec,
    NetworkPath,
    parse_duration,
)
from w5xde.contract.endpoints import (
    CERT_MANAGER_DIRECTORY,
    METRICS_PORT,
    TRUST_DIRECTORY,
    TRUST_FILE,
)
from w5xde.operator.resources.metadata import ClusterRef

#: `spec.network` fields the operator applies to the pod, not the worker process.
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


def render_worker_config(
    cluster: ClusterRef, spec: CompressionClusterSpec, workers: int
) -> dict[str, Any]:
    """`workers` is the count the pod template was rendered with; later scaling reaches
    running workers with the operator's report requests, not through a new template."""
    return {
        "clusterId": cluster.cluster_id,
        "listenHost": "0.0.0.0",
        "metricsPort": METRICS_PORT,
        "peerPattern": peer_pattern(cluster, spec.network.port, spec.network.path),
        "workers": workers,
        "logMode": spec.log_mode.value,
        "durationSeconds": parse_duration(spec.duration),
        "reporting": {"intervalSeconds": spec.status_interval_seconds},
        "workload": spec.workload.model_dump(mode="json", by_alias=True),
        "compression": spec.compression.model_dump(mode="json", by_alias=True),
        # Pod-level choices the worker never reads (the peer pattern already says the
        # path): left out, so a worker image older than them still parses its config.
        "network": spec.network.model_dump(
            mode="json", by_alias=True, exclude=POD_LEVEL_NETWORK_FIELDS
        ),
        **({"tls": tls_config(spec)} if spec.security.tls else {}),
    }


def tls_config(spec: CompressionClusterSpec) -> dict[str, Any]:
    """Operator-issued: the worker makes its key and asks the operator, and trusts the CA
    in its ConfigMap.  cert-manager: the CSI driver's files, reloaded when renewed."""
    if spec.security.certificates == CertificateIssuer.CERT_MANAGER:
        return {
            "source": "files",
            "caFile": f"{CERT_MANAGER_DIRECTORY}/ca.crt",
            "certificateFile": f"{CERT_MANAGER_DIRECTORY}/tls.crt",
            "keyFile": f"{CERT_MANAGER_DIRECTORY}/tls.key",
        }
    return {"source": "operator", "caFile": f"{TRUST_DIRECTORY}/{TRUST_FILE}"}


def worker_config_json(cluster: ClusterRef, spec: CompressionClusterSpec, workers: int) -> str:
    return json.dumps(render_worker_config(cluster, spec, workers), sort_keys=True)
