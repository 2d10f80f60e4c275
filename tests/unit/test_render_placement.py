"""Placement scenarios and network paths: what the pod template and Services say."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    HOST_NETWORK_NEEDS_ONE_PER_NODE,
    HOST_NETWORK_NO_SYSCTLS,
    NODES_NEED_LIST,
    CompressionClusterSpec,
)
from w5xde.operator.reconcile import OperatorContext, desired_state
from w5xde.operator.resources.metadata import ClusterRef, selector_labels
from w5xde.operator.resources.service import render_worker_service
from w5xde.operator.resources.statefulset import render_statefulset
from w5xde.operator.sysctl_policy import plan_sysctls
from w5xde.operator.worker_config import peer_pattern

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1", generation=1)
CONTEXT = OperatorContext(default_image="w5xde-worker:1", server_version=(1, 37))
PER_NODE = {
    "labelSelector": {"matchLabels": selector_labels(CLUSTER)},
    "topologyKey": "kubernetes.io/hostname",
}


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    model = CompressionClusterSpec.model_validate(spec)
    rendered = render_statefulset(
        CLUSTER,
        model,
        image="w",
        sysctls=plan_sysctls(model.network, (1, 37)),
        replicas=model.workers,
        template_workers=model.workers,
    )
    pod: dict[str, Any] = rendered["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("placement", ["required", "crossNode"])
def test_cross_node_is_one_worker_per_node(placement: str) -> None:
    affinity = _pod({"placement": placement})["affinity"]
    assert affinity == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [PER_NODE]}
    }


def test_same_node_is_hard_pod_affinity_and_drops_any_anti_affinity() -> None:
    user_anti = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    affinity = _pod({"placement": "sameNode", "affinity": user_anti})["affinity"]
    assert affinity == {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [PER_NODE]}
    }


def test_nodes_pins_the_listed_nodes_one_worker_each() -> None:
    affinity = _pod({"placement": "nodes", "placementNodes": ["a", "b"], "workers": 2})["affinity"]
    assert affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        PER_NODE
    ]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a", "b"]}
                ]
            }
        ]
    }


def test_spread_is_a_hard_topology_spread_over_the_key() -> None:
    pod = _pod({"placement": "spread", "placementTopologyKey": "example.com/rack"})
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "example.com/rack",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": selector_labels(CLUSTER)},
        }
    ]
    # Still preferring one worker per node inside a zone.
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert "topologySpreadConstraints" not in _pod({})


def test_placement_rules_are_the_api_servers() -> None:
    for spec in ({"placement": "nodes"}, {"placementNodes": ["a"]}):
        with pytest.raises(ValidationError, match=NODES_NEED_LIST):
            CompressionClusterSpec.model_validate(spec)
    with pytest.raises(ValidationError, match="at most one may run per node"):
        CompressionClusterSpec.model_validate({"network": {"hostNetwork": True}})
    with pytest.raises(ValidationError, match="cannot set net"):
        CompressionClusterSpec.model_validate(
            {
                "placement": "crossNode",
                "network": {"hostNetwork": True, "sysctls": {"net.ipv4.tcp_sack": "1"}},
            }
        )
    assert HOST_NETWORK_NEEDS_ONE_PER_NODE.startswith("network.hostNetwork:")
    assert HOST_NETWORK_NO_SYSCTLS.startswith("network.sysctls:")


def test_host_network_renders_no_pod_sysctls_and_keeps_cluster_dns() -> None:
    pod = _pod({"placement": "crossNode", "network": {"hostNetwork": True}})
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "sysctls" not in pod["securityContext"]
    # On the pod network the socket sysctls are there (Kubernetes 1.32+).
    assert "sysctls" in _pod({})["securityContext"]
    assert "hostNetwork" not in _pod({})


def test_service_path_dials_each_peers_own_cluster_ip_service() -> None:
    service = render_worker_service(CLUSTER, CompressionClusterSpec(), 3)
    assert service["metadata"]["name"] == "demo-3"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        **selector_labels(CLUSTER),
        "statefulset.kubernetes.io/pod-name": "demo-3",
    }
    assert service["spec"]["ports"] == [{"name": "data", "port": 7070, "targetPort": "data"}]
    # The worker's peer address is that Service's DNS name, whose first label is the
    # pod's name (the TLS identity the handshake expects).
    pattern = peer_pattern(
        CLUSTER,
        7070,
        CompressionClusterSpec.model_validate({"network": {"path": "service"}}).network.path,
    )
    assert pattern.format(index=3) == "demo-3.ns1.svc.cluster.local:7070"
    assert peer_pattern(CLUSTER, 7070).format(index=3) == "demo-3.demo.ns1.svc.cluster.local:7070"


def _services(desired: Any) -> list[str]:
    return sorted(o["metadata"]["name"] for o in desired.objects if o["kind"] == "Service")


def test_the_operator_owns_a_service_per_worker_and_removes_them_on_scale_down() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "network": {"path": "service"}})
    desired = desired_state(CLUSTER, spec, CONTEXT, existing_statefulset=None, cluster_key="k" * 64)
    assert _services(desired) == ["demo", "demo-0", "demo-1"]
    config = json.loads(
        next(o for o in desired.objects if o["kind"] == "StatefulSet")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"][0]["value"]
    )
    assert config["peerPattern"] == "demo-{index}.ns1.svc.cluster.local:7070"
    running = {"metadata": {"annotations": {}}, "spec": {"replicas": 4}}
    scaled = desired_state(
        CLUSTER, spec, CONTEXT, existing_statefulset=running, cluster_key="k" * 64
    )
    assert ("Service", "demo-2") in scaled.absent
    assert ("Service", "demo-3") in scaled.absent
    pod_path = desired_state(
        CLUSTER,
        CompressionClusterSpec(),
        CONTEXT,
        existing_statefulset=running,
        cluster_key="k" * 64,
    )
    assert _services(pod_path) == ["demo"]
    assert not [item for item in pod_path.absent if item[0] == "Service"]


def test_the_worker_config_carries_no_pod_level_network_fields() -> None:
    """An older worker image refuses unknown fields: the path and hostNetwork are the
    operator's business (the peer pattern already encodes the path)."""
    from w5xde.operator.worker_config import render_worker_config

    spec = CompressionClusterSpec.model_validate(
        {"placement": "crossNode", "network": {"path": "service", "hostNetwork": True}}
    )
    network = render_worker_config(CLUSTER, spec, 2)["network"]
    assert "path" not in network
    assert "hostNetwork" not in network
    assert network["port"] == 7070
