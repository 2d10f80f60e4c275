"""The workers' NetworkPolicy: exact peers and ports, and nothing admitted by accident."""

from __future__ import annotations

from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.reconcile import OperatorContext, desired_state
from w5xde.operator.resources.metadata import (
    ClusterRef,
    common_labels,
    owner_reference,
    selector_labels,
)
from w5xde.operator.resources.network_policy import (
    NetworkPolicyOptions,
    render_network_policy,
)
from w5xde.operator.resources.statefulset import render_statefulset
from w5xde.operator.sysctl_policy import SysctlPlan

CLUSTER = ClusterRef(name="demo", namespace="team-a", uid="uid-1", generation=1)
OPERATOR_LABELS = {
    "app.kubernetes.io/name": "w5xde",
    "app.kubernetes.io/instance": "w5xde",
    "app.kubernetes.io/component": "operator",
}
OPTIONS = NetworkPolicyOptions(
    operator_namespace="w5xde-system",
    operator_pod_labels=OPERATOR_LABELS,
    monitoring_namespaces=("monitoring", "observability"),
)
WORKERS = {
    "app.kubernetes.io/name": "w5xde",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "worker",
}


def _policy(
    spec: CompressionClusterSpec | None = None, options: NetworkPolicyOptions = OPTIONS
) -> dict[str, Any]:
    return render_network_policy(CLUSTER, spec or CompressionClusterSpec(), options)


def test_the_policy_is_owned_by_the_cluster_and_restricts_only_ingress() -> None:
    policy = _policy()
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"] == {
        "name": "demo",
        "namespace": "team-a",
        "labels": common_labels(CLUSTER),
        "ownerReferences": [owner_reference(CLUSTER)],
    }
    assert policy["spec"]["podSelector"] == {"matchLabels": WORKERS}
    # Egress untouched: DNS and the peers' own connections keep working.
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_exact_rules_data_port_from_the_cluster_metrics_port_from_operator_and_monitoring() -> None:
    assert _policy()["spec"]["ingress"] == [
        {
            "ports": [{"protocol": "TCP", "port": 7070}],
            "from": [{"podSelector": {"matchLabels": WORKERS}}],
        },
        {
            "ports": [{"protocol": "TCP", "port": 9090}],
            "from": [
                {
                    # One peer with both selectors: the operator's pods in its namespace
                    # (two peers would admit the whole namespace OR those labels anywhere).
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "w5xde-system"}
                    },
                    "podSelector": {"matchLabels": OPERATOR_LABELS},
                },
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                },
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                },
            ],
        },
    ]


def test_the_policy_selects_exactly_the_pods_the_statefulset_runs() -> None:
    spec = CompressionClusterSpec()
    statefulset = render_statefulset(
        CLUSTER, spec, image="w:1", sysctls=SysctlPlan(), replicas=2, template_workers=2
    )
    template = statefulset["spec"]["template"]
    policy = _policy(spec)["spec"]
    selected = policy["podSelector"]["matchLabels"]
    pod_labels = template["metadata"]["labels"]
    assert selected.items() <= pod_labels.items()
    assert selected == statefulset["spec"]["selector"]["matchLabels"]
    ports = {
        port["name"]: port["containerPort"] for port in template["spec"]["containers"][0]["ports"]
    }
    admitted = [rule["ports"][0]["port"] for rule in policy["ingress"]]
    assert admitted == [ports["data"], ports["metrics"]]
    # The peers of the data port are this cluster's pods, and only those.
    assert (
        policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    )


def test_the_data_port_follows_the_spec() -> None:
    spec = CompressionClusterSpec.model_validate({"network": {"port": 9000}})
    assert _policy(spec)["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_another_cluster_is_not_a_peer() -> None:
    other = ClusterRef(name="other", namespace="team-a", uid="uid-2")
    mine = _policy()["spec"]["ingress"][0]["from"]
    theirs = render_network_policy(other, CompressionClusterSpec(), OPTIONS)["spec"]
    assert theirs["ingress"][0]["from"] != mine
    assert theirs["podSelector"]["matchLabels"] == selector_labels(other)
    assert selector_labels(other)["app.kubernetes.io/instance"] == "other"


def test_no_monitoring_namespace_admits_only_the_operator() -> None:
    options = NetworkPolicyOptions("w5xde-system", OPERATOR_LABELS)
    metrics = _policy(options=options)["spec"]["ingress"][1]
    assert metrics["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "w5xde-system"}},
            "podSelector": {"matchLabels": OPERATOR_LABELS},
        }
    ]


def test_monitoring_namespaces_are_admitted_once_in_the_order_given() -> None:
    options = NetworkPolicyOptions("ops", {}, ("prom", "ops-mon", "prom"))
    peers = _policy(options=options)["spec"]["ingress"][1]["from"]
    names = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in peers
    ]
    assert names == ["ops", "prom", "ops-mon"]
    # No operator labels: every pod of the operator's namespace, still only that namespace.
    assert peers[0]["podSelector"] == {}
    assert all("podSelector" not in peer for peer in peers[1:])


def test_without_any_metrics_peer_the_rule_is_left_out_not_left_open() -> None:
    """An ingress rule with no `from` admits every source: it must not be rendered."""
    ingress = _policy(options=NetworkPolicyOptions())["spec"]["ingress"]
    assert len(ingress) == 1
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": 7070}]
    assert ingress[0]["from"]
    monitoring_only = NetworkPolicyOptions(monitoring_namespaces=("prom",))
    (_, metrics) = _policy(options=monitoring_only)["spec"]["ingress"]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}
    ]


def _desired(context: OperatorContext, spec: CompressionClusterSpec | None = None) -> Any:
    return desired_state(
        CLUSTER,
        spec or CompressionClusterSpec(),
        context,
        existing_statefulset=None,
        cluster_key="k" * 64,
    )


def test_enabled_the_policy_is_applied_before_the_workers_start() -> None:
    context = OperatorContext(default_image="w:1", server_version=(1, 37), network_policy=OPTIONS)
    desired = _desired(context)
    kinds = [obj["kind"] for obj in desired.objects]
    assert kinds == ["ServiceAccount", "Service", "NetworkPolicy", "StatefulSet"]
    assert desired.objects[2] == _policy()
    assert desired.absent == ()


def test_enabled_the_policy_stays_when_the_workers_are_withheld() -> None:
    context = OperatorContext(default_image="", server_version=(1, 37), network_policy=OPTIONS)
    desired = _desired(context)
    assert desired.fatal is not None
    assert [obj["kind"] for obj in desired.objects] == [
        "ServiceAccount",
        "Service",
        "NetworkPolicy",
    ]


def test_disabled_no_policy_is_rendered_and_an_earlier_one_is_to_go() -> None:
    desired = _desired(OperatorContext(default_image="w:1", server_version=(1, 37)))
    assert "NetworkPolicy" not in [obj["kind"] for obj in desired.objects]
    assert desired.absent == (("NetworkPolicy", "demo"),)
