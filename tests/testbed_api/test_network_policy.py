"""The workers' NetworkPolicy on the real API server: applied, owned, collected, removed.

The test bed's CNI (bridge) does not enforce NetworkPolicies, so what is checked here
is what the API server stores: that it accepts the operator's policy as rendered
(server-side apply), that the policy goes with its cluster, and that switching the
policies off removes the ones the operator made and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.kube import Kube
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.network_policy import NetworkPolicyOptions, render_network_policy

from .conftest import OperatorProcess, apply_cluster, get_json, token_client

pytestmark = pytest.mark.testbed

CHART = Path(__file__).resolve().parents[2] / "charts" / "w5xde"

OPERATOR_LABELS = "app.kubernetes.io/component=operator,app.kubernetes.io/instance=w5xde"
POLICY_FLAGS = (
    "--operator-namespace", "w5xde-system",
    "--operator-pod-labels", OPERATOR_LABELS,
    "--monitoring-namespace", "monitoring",
)  # fmt: skip
SMALL = {"workers": 1, "workload": {"rateLimitBytesPerSecond": 100_000}}


def _policy(testbed: Any, namespace: str, name: str) -> dict[str, Any] | None:
    result = testbed.kubectl(
        "get", "networkpolicy", name, "-n", namespace, "-o", "json", check=False
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def _reconciled(testbed: Any, namespace: str, name: str) -> bool:
    cluster = get_json(testbed, "-n", namespace, "cc", name)
    observed = (cluster.get("status") or {}).get("observedGeneration")
    return bool(observed == cluster["metadata"]["generation"])


def test_the_operator_applies_the_worker_policy_and_it_goes_with_the_cluster(
    testbed: Any, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator(*POLICY_FLAGS)
    apply_cluster(testbed, namespace, "demo", SMALL)
    policy = testbed.wait_for(
        lambda: _policy(testbed, namespace, "demo"),
        60,
        f"networkpolicy/demo applied by the operator\n{operator.log()}",
    )
    uid = get_json(testbed, "-n", namespace, "cc", "demo")["metadata"]["uid"]
    assert policy["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "name": "demo",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert policy["metadata"]["labels"]["w5xde.io/cluster"] == "demo"
    workers = {
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/name": "w5xde",
    }
    # As stored by the API server: nothing added, nothing lost.
    assert policy["spec"] == {
        "podSelector": {"matchLabels": workers},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "ports": [{"protocol": "TCP", "port": 7070}],
                "from": [{"podSelector": {"matchLabels": workers}}],
            },
            {
                "ports": [{"protocol": "TCP", "port": 9090}],
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "w5xde-system"}
                        },
                        "podSelector": {
                            "matchLabels": {
                                "app.kubernetes.io/component": "operator",
                                "app.kubernetes.io/instance": "w5xde",
                            }
                        },
                    },
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    },
                ],
            },
        ],
    }
    # It selects the pods the StatefulSet runs.
    pod = testbed.wait_for(
        lambda: get_json(testbed, "-n", namespace, "pods", "-l", "w5xde.io/cluster=demo")["items"],
        60,
        "the worker pod of demo",
    )[0]
    assert workers.items() <= pod["metadata"]["labels"].items()

    # A new data port reaches the policy on the next reconcile.
    apply_cluster(testbed, namespace, "demo", {**SMALL, "network": {"port": 7171}})
    testbed.wait_for(
        lambda: (
            (_policy(testbed, namespace, "demo") or {})["spec"]["ingress"][0]["ports"]
            == [{"protocol": "TCP", "port": 7171}]
        ),
        60,
        f"the policy following spec.network.port\n{operator.log()}",
    )

    testbed.kubectl("delete", "-n", namespace, "cc", "demo", "--wait=true", "--timeout=60s")
    testbed.wait_for(
        lambda: _policy(testbed, namespace, "demo") is None,
        90,
        "networkpolicy/demo garbage-collected with its cluster",
    )


def test_switched_off_the_operator_removes_its_policies_and_only_those(
    testbed: Any, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    first = start_operator(*POLICY_FLAGS)
    apply_cluster(testbed, namespace, "demo", SMALL)
    testbed.wait_for(
        lambda: _policy(testbed, namespace, "demo"),
        60,
        f"networkpolicy/demo applied by the operator\n{first.log()}",
    )
    first.stop()

    # Someone's own policy that happens to carry a cluster's name, made before it.
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "byhand", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    testbed.kubectl("apply", "-f", "-", input=json.dumps(foreign))

    second = start_operator("--no-network-policy")
    # kopf resumes every cluster on start: the policy the operator made goes.
    testbed.wait_for(
        lambda: _policy(testbed, namespace, "demo") is None,
        60,
        f"networkpolicy/demo removed by the operator switched off\n{second.log()}",
    )
    apply_cluster(testbed, namespace, "byhand", SMALL)
    testbed.wait_for(
        lambda: _reconciled(testbed, namespace, "byhand"),
        60,
        f"cc/byhand reconciled\n{second.log()}",
    )
    kept = _policy(testbed, namespace, "byhand")
    assert kept is not None, "a policy the cluster does not own was deleted"
    assert not kept["metadata"].get("ownerReferences")
    assert kept["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # The cluster itself still runs its objects.
    assert get_json(testbed, "-n", namespace, "statefulset", "demo")["spec"]["replicas"] == 1


def test_the_chart_role_is_enough_to_apply_and_remove_the_policy(
    testbed: Any, namespace: str, crd: str
) -> None:
    """The operator's own calls, made with a token bound to the chart's namespaced Role
    (no more): server-side apply creates and updates the policy, the owned one is read
    and deleted.  No images needed, so this runs where the chart install test cannot."""
    rendered = testbed.helm(
        "template", "w5xde", str(CHART), "--namespace", "w5xde-system",
        "--kube-version", testbed.server_version(), "--set", "crds.install=false",
        "--set", f"watchNamespaces={{{namespace}}}",
    ).stdout  # fmt: skip
    (role,) = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Role"]
    account = "chart-operator"
    role["metadata"] = {"name": account, "namespace": namespace}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    testbed.kubectl("create", "serviceaccount", account, "-n", namespace)
    for obj in (role, binding):
        testbed.kubectl("apply", "-f", "-", input=json.dumps(obj))
    # An owner that exists, so the garbage collector leaves the policy alone meanwhile.
    apply_cluster(testbed, namespace, "owner", {"workers": 1})
    cluster = ClusterRef.from_body(get_json(testbed, "-n", namespace, "cc", "owner"))
    kube = Kube(token_client(testbed, namespace, account))

    options = NetworkPolicyOptions("w5xde-system", {"app": "op"}, ("monitoring",))
    policy = render_network_policy(cluster, CompressionClusterSpec(), options)
    kube.apply(policy)  # creates it
    kube.apply(render_network_policy(cluster, CompressionClusterSpec(), NetworkPolicyOptions()))
    stored = _policy(testbed, namespace, cluster.network_policy)
    assert stored is not None
    assert len(stored["spec"]["ingress"]) == 1  # updated: no metrics peers any more
    assert not kube.delete_if_owned("NetworkPolicy", namespace, cluster.network_policy, "other")
    assert _policy(testbed, namespace, cluster.network_policy) is not None
    assert kube.delete_if_owned("NetworkPolicy", namespace, cluster.network_policy, cluster.uid)
    assert _policy(testbed, namespace, cluster.network_policy) is None
    assert not kube.delete_if_owned("NetworkPolicy", namespace, cluster.network_policy, cluster.uid)
