"""The workers' StatefulSet: stable names for peers, all pods started at once.

The pod template carries a hash of everything that should roll the workers.  The
worker count is deliberately outside the hash: `kubectl scale` changes replicas only,
and running workers learn the new count from the operator's report requests.  Workers
get no service-account token: they never talk to the API server.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from w5xde.api.v1alpha1 import (
    ONE_WORKER_PER_NODE,
    CertificateIssuer,
    CompressionClusterSpec,
    Placement,
)
from w5xde.contract.endpoints import (
    CERT_MANAGER_DIRECTORY,
    ENV_CLUSTER_KEY_FILE,
    ENV_CONFIG,
    ENV_LOG_MODE,
    ENV_NAME,
    ENV_NODE_NAME,
    ENV_POD_IP,
    ENV_RUN_DEADLINE,
    ENV_TLS_SCRATCH_DIR,
    METRICS_PORT,
    METRICS_PORT_NAME,
    RUN_DEADLINE_FIELD,
    TLS_SCRATCH_DIRECTORY,
    TRUST_DIRECTORY,
)
from w5xde.operator.resources.metadata import (
    NODE_TUNED_LABEL,
    SECRET_KEY_FIELD,
    TEMPLATE_HASH_ANNOTATION,
    TEMPLATE_WORKERS_ANNOTATION,
    ClusterRef,
    common_labels,
    object_meta,
    selector_labels,
)
from w5xde.operator.sysctl_policy import SysctlPlan
from w5xde.operator.worker_config import worker_config_json

CONTAINER_NAME = "worker"
HOSTNAME_LABEL = "kubernetes.io/hostname"
#: The nonroot user of distroless-style images; the worker image uses it too.
RUN_AS_USER = 65532
TMP_VOLUME = "tmp"
KEY_VOLUME = "cluster-key"
#: The cluster key as a file (not an env var: those show in /proc/<pid>/environ and
#: in `kubectl describe`); readable by the worker's group only.
KEY_DIRECTORY = "/var/run/secrets/w5xde.io"
KEY_FILE_MODE = 0o440
#: A private emptyDir: the root filesystem is read-only.
TMP_PATH = "/tmp"  # noqa: S108
TRUST_VOLUME = "cluster-ca"
CERT_MANAGER_VOLUME = "tls-identity"
CERT_MANAGER_CSI_DRIVER = "csi.cert-manager.io"
#: In memory: `ssl` reads a worker's freshly made key from here for an instant.
TLS_SCRATCH_VOLUME = "tls-scratch"


def render_statefulset(
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    *,
    image: str,
    sysctls: SysctlPlan,
    replicas: int,
    template_workers: int,
    template_hash: str | None = None,
) -> dict[str, Any]:
    """`replicas` is what should run now (0 once a bounded run completed);
    `template_workers` is the count baked into the pod template (see module doc);
    `template_hash` is `pod_template_hash` if the caller has it already."""
    if template_hash is None:
        template_hash = pod_template_hash(cluster, spec, image=image, sysctls=sysctls)
    template = _pod_template(cluster, spec, image, sysctls, template_workers)
    template["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] = template_hash
    annotations = {
        TEMPLATE_HASH_ANNOTATION: template_hash,
        TEMPLATE_WORKERS_ANNOTATION: str(template_workers),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_meta(cluster, cluster.statefulset, annotations),
        "spec": {
            "replicas": replicas,
            "serviceName": cluster.service,
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(cluster)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": template,
        },
    }


def pod_template_hash(
    cluster: ClusterRef, spec: CompressionClusterSpec, *, image: str, sysctls: SysctlPlan
) -> str:
    """Changes exactly when the pods must be replaced (the worker count excluded: the
    template is hashed as if for one worker, whatever the count)."""
    template = _pod_template(cluster, spec, image, sysctls, workers=1)
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _pod_template(
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    image: str,
    sysctls: SysctlPlan,
    workers: int,
) -> dict[str, Any]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        **spec.pod_annotations,
    }
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # On the host network a pod's net.* sysctls would be the node's: the kubelet refuses
    # them, so none are rendered (the API refuses spec.network.sysctls there).
    if sysctls.sysctls and not spec.network.host_network:
        pod_security["sysctls"] = sysctls.pod_sysctls()
    pod_spec: dict[str, Any] = {
        "serviceAccountName": cluster.worker_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": pod_security,
        "containers": [_container(cluster, spec, image, workers)],
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {}},
            {
                "name": KEY_VOLUME,
                "secret": {"secretName": cluster.key_secret, "defaultMode": KEY_FILE_MODE},
            },
            *(_tls_volumes(cluster, spec) if spec.security.tls else ()),
            *(volume.pod_volume() for volume in spec.volumes),
        ],
    }
    node_selector = dict(spec.node_selector)
    if spec.network.node_tuning:
        node_selector[NODE_TUNED_LABEL] = "true"
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = list(spec.tolerations)
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    affinity = _affinity(cluster, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.placement is Placement.SPREAD:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": spec.placement_topology_key,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": selector_labels(cluster)},
            }
        ]
    if spec.network.host_network:
        # Peers are still found by their cluster DNS names.
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "metadata": {"labels": common_labels(cluster), "annotations": annotations},
        "spec": pod_spec,
    }


def _container(
    cluster: ClusterRef, spec: CompressionClusterSpec, image: str, workers: int
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["worker"],
        "ports": [
            {"name": "data", "containerPort": spec.network.port, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": ENV_CONFIG, "value": worker_config_json(cluster, spec, workers)},
            {
                "name": ENV_RUN_DEADLINE,
                "valueFrom": {
                    "configMapKeyRef": {
                        "name": cluster.run_config,
                        "key": RUN_DEADLINE_FIELD,
                        "optional": True,
                    }
                },
            },
            {"name": ENV_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": ENV_LOG_MODE, "value": spec.log_mode.value},
            {"name": ENV_CLUSTER_KEY_FILE, "value": f"{KEY_DIRECTORY}/{SECRET_KEY_FIELD}"},
            # The metrics and report server binds to the pod IP only.
            {"name": ENV_POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            *(
                [{"name": ENV_TLS_SCRATCH_DIR, "value": TLS_SCRATCH_DIRECTORY}]
                if spec.security.tls
                else []
            ),
        ],
        # A worker keeps its cores busy by design, so its probe server may answer late:
        # generous timeouts keep a saturated but healthy worker from being restarted.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": METRICS_PORT_NAME},
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": TMP_PATH},
            {"name": KEY_VOLUME, "mountPath": KEY_DIRECTORY, "readOnly": True},
            *(_tls_mounts(spec) if spec.security.tls else []),
            *spec.volume_mounts,
        ],
    }
    if spec.resources:
        container["resources"] = dict(spec.resources)
    return container


def _tls_volumes(cluster: ClusterRef, spec: CompressionClusterSpec) -> tuple[dict[str, Any], ...]:
    """The CA certificate from the operator's ConfigMap, or, with cert-manager, the pod's
    own certificate, key and CA from its CSI driver; and the in-memory scratch space."""
    scratch = {
        "name": TLS_SCRATCH_VOLUME,
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
    }
    issuer = spec.security.issuer_ref
    if spec.security.certificates == CertificateIssuer.CERT_MANAGER and issuer is not None:
        attributes = {
            "csi.cert-manager.io/issuer-name": issuer.name,
            "csi.cert-manager.io/issuer-kind": issuer.kind,
            "csi.cert-manager.io/issuer-group": issuer.group,
            # One name, the pod's: the workers take a peer's name from its certificate.
            "csi.cert-manager.io/common-name": "${POD_NAME}",
            "csi.cert-manager.io/dns-names": "${POD_NAME}",
            "csi.cert-manager.io/key-usages": "digital signature,server auth,client auth",
            "csi.cert-manager.io/fs-group": str(RUN_AS_USER),
        }
        driver = {"driver": CERT_MANAGER_CSI_DRIVER, "readOnly": True}
        return (
            {"name": CERT_MANAGER_VOLUME, "csi": {**driver, "volumeAttributes": attributes}},
            scratch,
        )
    return ({"name": TRUST_VOLUME, "configMap": {"name": cluster.trust_bundle}}, scratch)


def _tls_mounts(spec: CompressionClusterSpec) -> list[dict[str, Any]]:
    scratch = {"name": TLS_SCRATCH_VOLUME, "mountPath": TLS_SCRATCH_DIRECTORY}
    if spec.security.certificates == CertificateIssuer.CERT_MANAGER:
        identity = {"name": CERT_MANAGER_VOLUME, "mountPath": CERT_MANAGER_DIRECTORY}
        return [{**identity, "readOnly": True}, scratch]
    return [{"name": TRUST_VOLUME, "mountPath": TRUST_DIRECTORY, "readOnly": True}, scratch]


def _affinity(cluster: ClusterRef, spec: CompressionClusterSpec) -> dict[str, Any]:
    """The user's affinity plus the placement's (docs/api.md): the placement's terms
    replace the user's of the same kind; `preferred` only adds a soft spread when the
    user gave no pod anti-affinity of their own."""
    affinity = dict(spec.affinity)
    per_node = {
        "labelSelector": {"matchLabels": selector_labels(cluster)},
        "topologyKey": HOSTNAME_LABEL,
    }
    if spec.placement in ONE_WORKER_PER_NODE:
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [per_node]}
        if spec.placement is Placement.NODES:
            term = {"key": HOSTNAME_LABEL, "operator": "In", "values": list(spec.placement_nodes)}
            affinity["nodeAffinity"] = {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
    elif spec.placement is Placement.SAME_NODE:
        # The first pod matches its own term, so the scheduler places it anywhere; every
        # other pod then goes where it is.
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [per_node]}
        affinity.pop("podAntiAffinity", None)
    elif spec.spread_across_nodes and "podAntiAffinity" not in affinity:
        affinity["podAntiAffinity"] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": per_node}
            ]
        }
    return affinity
