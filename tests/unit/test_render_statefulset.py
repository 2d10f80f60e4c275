"""The worker StatefulSet: pod security, sysctls, spreading, probes, template hash."""

from __future__ import annotations

import json
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.resources.metadata import (
    NODE_TUNED_LABEL,
    TEMPLATE_HASH_ANNOTATION,
    TEMPLATE_WORKERS_ANNOTATION,
    ClusterRef,
    selector_labels,
)
from w5xde.operator.resources.statefulset import pod_template_hash, render_statefulset
from w5xde.operator.sysctl_policy import SysctlPlan, plan_sysctls

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")
IMAGE = "registry.local/w5xde-worker:1"


def _render(spec: CompressionClusterSpec, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "image": IMAGE,
        "sysctls": plan_sysctls(spec.network, (1, 37)),
        "replicas": spec.workers,
        "template_workers": spec.workers,
    }
    arguments.update(overrides)
    return render_statefulset(CLUSTER, spec, **arguments)


def _pod(statefulset: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return pod


def _env(statefulset: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in _pod(statefulset)["containers"][0]["env"]}


def test_defaults() -> None:
    statefulset = _render(CompressionClusterSpec())
    spec = statefulset["spec"]
    assert spec["replicas"] == 4
    assert spec["serviceName"] == "demo"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["selector"] == {"matchLabels": selector_labels(CLUSTER)}
    template_labels = spec["template"]["metadata"]["labels"]
    assert selector_labels(CLUSTER).items() <= template_labels.items()
    pod = _pod(statefulset)
    assert pod["serviceAccountName"] == "demo-worker"
    # The operator pulls the reports: a worker holds no Kubernetes credentials at all.
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["args"] == ["worker"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "data": 7070,
        "metrics": 9090,
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The kubelet's 1 s default would restart a worker that is busy, not broken.
    assert container["livenessProbe"]["timeoutSeconds"] >= 5
    assert "resources" not in container
    assert "nodeSelector" not in pod
    assert "imagePullSecrets" not in pod


def test_pod_security_passes_baseline_and_more() -> None:
    pod = _pod(_render(CompressionClusterSpec()))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert forbidden not in pod


def test_socket_buffer_sysctls_on_a_new_server() -> None:
    pod = _pod(_render(CompressionClusterSpec()))
    sysctls = {item["name"]: item["value"] for item in pod["securityContext"]["sysctls"]}
    assert sysctls == {
        "net.ipv4.tcp_rmem": "4096 131072 4194304",
        "net.ipv4.tcp_wmem": "4096 16384 4194304",
    }


def test_no_sysctls_when_autotuning_and_none_asked() -> None:
    spec = CompressionClusterSpec.model_validate({"network": {"socketBufferBytes": 0}})
    pod = _pod(_render(spec))
    assert "sysctls" not in pod["securityContext"]


def test_env_carries_config_identity_and_key() -> None:
    env = _env(_render(CompressionClusterSpec.model_validate({"logMode": "2"})))
    config = json.loads(env["W5XDE_CONFIG"]["value"])
    assert config["workers"] == 4
    assert env["W5XDE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["W5XDE_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["W5XDE_LOG_MODE"]["value"] == "normal"
    # The key is a mounted file, never an env var (environ is readable in /proc).
    assert "W5XDE_CLUSTER_KEY" not in env
    key_file = env["W5XDE_CLUSTER_KEY_FILE"]["value"]
    pod = _pod(_render(CompressionClusterSpec()))
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if key_file.startswith(m["mountPath"])
    ]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "demo-key", "defaultMode": 0o440}
    assert key_file.endswith("/key")


def test_spread_is_preferred_anti_affinity_unless_the_user_chose() -> None:
    pod = _pod(_render(CompressionClusterSpec()))
    preferred = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    term = preferred[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == {"matchLabels": selector_labels(CLUSTER)}

    no_spread = CompressionClusterSpec.model_validate({"spreadAcrossNodes": False})
    assert "affinity" not in _pod(_render(no_spread))

    own = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}
    mine = CompressionClusterSpec.model_validate({"affinity": own})
    assert _pod(_render(mine))["affinity"] == own


def test_edge_spec_node_tuning_resources_volumes_annotations() -> None:
    spec = CompressionClusterSpec.model_validate(
        {
            "workers": 1000,
            "network": {"nodeTuning": True, "port": 65535},
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
            "podAnnotations": {"team": "data"},
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "imagePullSecrets": [{"name": "registry-creds"}],
        }
    )
    statefulset = _render(spec)
    pod = _pod(statefulset)
    assert statefulset["spec"]["replicas"] == 1000
    assert pod["nodeSelector"] == {"disk": "ssd", NODE_TUNED_LABEL: "true"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert container["ports"][0]["containerPort"] == 65535
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "c"}} in pod["volumes"]
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["team"] == "data"


def test_template_hash_ignores_the_worker_count_but_not_the_rest() -> None:
    plan = SysctlPlan()
    base = CompressionClusterSpec()
    scaled = CompressionClusterSpec.model_validate({"workers": 9})
    relevel = CompressionClusterSpec.model_validate({"compression": {"level": 9}})

    def digest(spec: CompressionClusterSpec, image: str = IMAGE) -> str:
        return pod_template_hash(CLUSTER, spec, image=image, sysctls=plan)

    assert digest(base) == digest(scaled)
    assert digest(base) != digest(relevel)
    assert digest(base) != digest(base, image="other:2")
    statefulset = _render(base)
    annotations = statefulset["metadata"]["annotations"]
    template = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations[TEMPLATE_HASH_ANNOTATION] == template[TEMPLATE_HASH_ANNOTATION]
    assert annotations[TEMPLATE_WORKERS_ANNOTATION] == "4"


def test_template_keeps_its_worker_count_while_replicas_follow_the_spec() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 6})
    statefulset = _render(spec, template_workers=4)
    assert statefulset["spec"]["replicas"] == 6
    assert json.loads(_env(statefulset)["W5XDE_CONFIG"]["value"])["workers"] == 4
    assert _render(spec, replicas=0)["spec"]["replicas"] == 0


def test_required_placement_is_hard_anti_affinity_per_node() -> None:
    spec = CompressionClusterSpec.model_validate({"placement": "required"})
    rendered = render_statefulset(
        CLUSTER, spec, image=IMAGE, sysctls=plan_sysctls(spec.network, (1, 37)),
        replicas=4, template_workers=4,
    )  # fmt: skip
    anti = _pod(rendered)["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == {"matchLabels": selector_labels(CLUSTER)}


def test_tls_identities_from_the_operator_or_from_cert_manager() -> None:
    """Operator-issued: the CA's ConfigMap and an in-memory scratch volume, no key volume
    at all (the worker makes its own).  cert-manager: its CSI driver gives each pod a
    certificate for its own name, and the worker reads those files."""
    pod = _pod(_render(CompressionClusterSpec()))
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["cluster-ca"] == {"name": "cluster-ca", "configMap": {"name": "demo-ca"}}
    assert volumes["tls-scratch"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert "tls-identity" not in volumes
    config = json.loads(_env(_render(CompressionClusterSpec()))["W5XDE_CONFIG"]["value"])
    assert config["tls"] == {"source": "operator", "caFile": "/var/run/w5xde.io/ca/ca.crt"}

    spec = CompressionClusterSpec.model_validate(
        {
            "security": {
                "certificates": "certManager",
                "issuerRef": {"name": "mesh-ca", "kind": "ClusterIssuer"},
            }
        }
    )
    rendered = _render(spec)
    pod = _pod(rendered)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "cluster-ca" not in volumes
    csi = volumes["tls-identity"]["csi"]
    assert csi["driver"] == "csi.cert-manager.io"
    assert csi["volumeAttributes"]["csi.cert-manager.io/issuer-name"] == "mesh-ca"
    assert csi["volumeAttributes"]["csi.cert-manager.io/issuer-kind"] == "ClusterIssuer"
    assert csi["volumeAttributes"]["csi.cert-manager.io/issuer-group"] == "cert-manager.io"
    assert csi["volumeAttributes"]["csi.cert-manager.io/dns-names"] == "${POD_NAME}"
    assert csi["volumeAttributes"]["csi.cert-manager.io/common-name"] == "${POD_NAME}"
    mounts = {mount["name"]: mount for mount in pod["containers"][0]["volumeMounts"]}
    assert mounts["tls-identity"] == {
        "name": "tls-identity",
        "mountPath": "/var/run/w5xde.io/tls-identity",
        "readOnly": True,
    }
    config = json.loads(_env(rendered)["W5XDE_CONFIG"]["value"])
    assert config["tls"] == {
        "source": "files",
        "caFile": "/var/run/w5xde.io/tls-identity/ca.crt",
        "certificateFile": "/var/run/w5xde.io/tls-identity/tls.crt",
        "keyFile": "/var/run/w5xde.io/tls-identity/tls.key",
    }
    assert spec.security.operator_issued is False


def test_cert_manager_without_an_issuer_is_refused_naming_the_field() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"security\.issuerRef is required"):
        CompressionClusterSpec.model_validate({"security": {"certificates": "certManager"}})
