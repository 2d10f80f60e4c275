"""The chart installed on the test bed's real API server, in its least-privilege mode.

The end-to-end journeys install the chart cluster-wide; this test takes the other
path: the operator in a namespace enforcing PodSecurity `restricted`, serving only
another namespace through a Role there, with two replicas sharing kopf peering.
Only the real API server can say that those Roles are enough (including RBAC's
escalation check when the operator creates the workers' Role), that the objects
pass admission, and that the replicas find each other.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from testbed.fixtures import Testbed
from w5xde.operator.resources.metadata import NODE_TUNED_LABEL, ClusterRef
from w5xde.operator.resources.service_account import render_service_account

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "charts" / "w5xde"
OPERATOR_LABELS = "app.kubernetes.io/part-of=w5xde,app.kubernetes.io/component=operator"


def get_json(testbed: Testbed, *args: str) -> dict[str, Any]:
    result = testbed.kubectl("get", *args, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


@pytest.fixture
def served_namespace(testbed: Testbed) -> Iterator[str]:
    """The namespace the operator serves, at the `baseline` level worker pods are built for."""
    name = f"t-{uuid.uuid4().hex[:8]}-served"
    testbed.kubectl("create", "namespace", name)
    testbed.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=baseline")
    try:
        yield name
    finally:
        testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextmanager
def installed(testbed: Testbed, release: str, namespace: str, *settings: str) -> Iterator[None]:
    """The chart installed as `release`, and uninstalled again.

    It brings only the CRDs nobody has (a release cannot take over another's) and
    leaves them behind (`crds.keep`), as a user's uninstall does: deleting a CRD
    right after creating it can stay stuck for minutes ("storage is
    (re)initializing", operator-framework/operator-controller#1437).
    """
    ours = testbed.kubectl("get", "crd", "compressionclusters.w5xde.io", check=False)
    kopf = testbed.kubectl("get", "crd", "kopfpeerings.kopf.dev", check=False)
    testbed.helm(
        "install", release, str(CHART), "--namespace", namespace,
        "--values", str(CHART.parents[1] / "tests" / "chart_values" / "local-images.yaml"),
        "--set", f"crds.install={str(ours.returncode != 0).lower()}",
        "--set", f"crds.kopfPeering={str(kopf.returncode != 0).lower()}",
        *settings,
        "--wait", "--timeout", "3m",
        timeout=240,
    )  # fmt: skip
    try:
        yield
    finally:
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)


def no_other_operator(testbed: Testbed) -> None:
    """An operator left over from another test would reconcile our clusters as well."""
    testbed.wait_for(
        lambda: not get_json(testbed, "pods", "-A", "-l", OPERATOR_LABELS).get("items"),
        60,
        "no other W5XDE operator running",
    )


def test_namespaced_install_with_two_replicas_reconciles_under_its_roles(
    testbed: Testbed, namespace: str, served_namespace: str
) -> None:
    no_other_operator(testbed)
    testbed.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    release = f"w5xde-{namespace}"
    settings = ("--set", f"watchNamespaces={{{served_namespace}}}", "--set", "replicaCount=2")
    with installed(testbed, release, namespace, *settings):
        try:
            check_reconciled_under_chart_rbac(testbed, namespace, served_namespace, release)
        finally:
            testbed.kubectl("delete", "cc", "--all", "-n", served_namespace, "--wait=true",
                            "--timeout=60s", check=False)  # fmt: skip


def test_node_tuning_daemonset_labels_the_nodes_it_checked(
    testbed: Testbed, namespace: str
) -> None:
    """The tuning script, run by the DaemonSet as the chart deploys it, against real nodes.

    The caps asked for (4 KiB) are below any kernel's value, so the script only
    reads them back: a real write would change the host's kernel (the test bed's
    pods share it, and in a pod's own network namespace the caps are read-only).
    What runs for real is the rest: the pod, its ServiceAccount token, the chart's
    ClusterRole on nodes and the label the operator schedules by.
    """
    no_other_operator(testbed)
    testbed.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=privileged"
    )
    release = f"w5xde-{namespace}"
    settings = (
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "nodeTuning.enabled=true",
        "--set", "nodeTuning.rmemMax=4096,nodeTuning.wmemMax=4096",
        # One round is enough; a long sleep keeps it from re-labelling during clean-up.
        "--set", "nodeTuning.intervalSeconds=3600",
        "--set-string", "nodeTuning.nodeSelector.w5xde\\.io/testbed-node=true",
    )  # fmt: skip
    nodes = [
        node["metadata"]["name"]
        for node in get_json(testbed, "nodes", "-l", "w5xde.io/testbed-node=true")["items"]
    ]
    assert nodes
    try:
        with installed(testbed, release, namespace, *settings):

            def labelled() -> list[str] | None:
                found = get_json(testbed, "nodes", "-l", f"{NODE_TUNED_LABEL}=true")["items"]
                names = sorted(node["metadata"]["name"] for node in found)
                return names if names == sorted(nodes) else None

            testbed.wait_for(labelled, 90, f"{NODE_TUNED_LABEL}=true on {nodes}")
            pods = get_json(testbed, "pods", "-n", namespace, "-l",
                            "app.kubernetes.io/component=node-tuning")["items"]  # fmt: skip
            assert len(pods) == len(nodes)
            for pod in pods:
                log = testbed.pod_log(namespace, pod["metadata"]["name"])
                assert f"labelled {NODE_TUNED_LABEL}=true" in log, log
    finally:
        testbed.wait_for(
            lambda: not get_json(testbed, "pods", "-n", namespace, "-l",
                                 "app.kubernetes.io/component=node-tuning").get("items"),
            60,
            "the tuning pods gone",
        )  # fmt: skip
        # Other tests expect untuned nodes (a nodeTuning cluster must degrade there).
        testbed.kubectl("label", "nodes", "--all", f"{NODE_TUNED_LABEL}-", check=False)


def check_reconciled_under_chart_rbac(
    testbed: Testbed, namespace: str, served_namespace: str, release: str
) -> None:
    budget = get_json(testbed, "poddisruptionbudget", release, "-n", namespace)
    assert budget["spec"]["minAvailable"] == 1
    pods = get_json(testbed, "pods", "-n", namespace, "-l", OPERATOR_LABELS)["items"]
    assert len(pods) == 2
    assert all(pod["status"]["phase"] == "Running" for pod in pods)

    testbed.kubectl(
        "apply", "-n", served_namespace, "-f", "-",
        input=textwrap.dedent("""\
            apiVersion: w5xde.io/v1alpha1
            kind: CompressionCluster
            metadata:
              name: demo
            spec:
              workers: 1
            """),
    )  # fmt: skip

    def reconciled() -> dict[str, Any] | None:
        cluster = get_json(testbed, "cc", "demo", "-n", served_namespace)
        observed = (cluster.get("status") or {}).get("observedGeneration")
        if observed != cluster["metadata"]["generation"]:
            return None
        return get_json(testbed, "statefulset", "demo", "-n", served_namespace) or None

    statefulset = testbed.wait_for(reconciled, 120, "the operator to reconcile cc/demo")
    assert statefulset["spec"]["replicas"] == 1
    # Every object the operator owns for the cluster, created under the chart's Role in
    # the served namespace, as the operator renders it and owned by the cluster.  The
    # workers' ServiceAccount holds no permissions and mounts no token.
    cluster = ClusterRef.from_body(get_json(testbed, "cc", "demo", "-n", served_namespace))
    account = get_json(testbed, "serviceaccount", cluster.worker_account, "-n", served_namespace)
    assert account, f"no ServiceAccount {cluster.worker_account} in {served_namespace}"
    assert account["automountServiceAccountToken"] is False
    assert (
        account["automountServiceAccountToken"]
        == (render_service_account(cluster)["automountServiceAccountToken"])
    )
    for kind, name in (
        ("serviceaccount", cluster.worker_account),
        ("service", cluster.service),
        ("statefulset", cluster.statefulset),
        ("networkpolicy", cluster.network_policy),
    ):
        owned = get_json(testbed, kind, name, "-n", served_namespace)
        assert owned, f"no {kind} {name} in {served_namespace}"
        owners = [owner["uid"] for owner in owned["metadata"].get("ownerReferences", [])]
        assert owners == [cluster.uid], (kind, name, owners)
    # The workers' report port admits the operator's pods, in the namespace the downward
    # API gave it (a Role in the served namespace was enough to apply the policy).
    policy = get_json(testbed, "networkpolicy", cluster.network_policy, "-n", served_namespace)
    operator_peer = policy["spec"]["ingress"][1]["from"][0]
    assert operator_peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": namespace
    }
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert operator_peer["podSelector"]["matchLabels"].items() <= labels.items()
    # And the chart's own policy guards the operator pods.
    own = get_json(testbed, "networkpolicy", release, "-n", namespace)
    assert (
        own["spec"]["podSelector"]["matchLabels"].items() <= pods[0]["metadata"]["labels"].items()
    )
    bindings = get_json(testbed, "rolebindings", "-n", served_namespace)["items"]
    assert not [
        binding["metadata"]["name"]
        for binding in bindings
        for subject in binding.get("subjects", [])
        if subject.get("name") == cluster.worker_account
    ], "the workers' ServiceAccount must hold no permissions"

    def peers() -> dict[str, Any] | None:
        peering = get_json(testbed, "kopfpeerings.kopf.dev", release, "-n", served_namespace)
        found = dict(peering.get("status") or {})
        return found if len(found) == 2 else None

    found = testbed.wait_for(peers, 90, f"both replicas in kopfpeering {release}")
    assert {pod["metadata"]["name"] for pod in pods} == set(found)

    for pod in pods:
        log = testbed.pod_log(namespace, pod["metadata"]["name"])
        assert "forbidden" not in log.lower(), log[-3000:]
