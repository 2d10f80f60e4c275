"""The operator creates every owned object, owned by the cluster, and RBAC is tight."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION

from .conftest import OperatorProcess, apply_cluster, get_json, token_client

pytestmark = pytest.mark.testbed

OWNED = [
    ("serviceaccount", "demo-worker"),
    ("secret", "demo-key"),
    ("secret", "demo-ca"),  # the cluster CA (TLS is on by default)
    ("configmap", "demo-ca"),  # its certificate, for the workers
    ("service", "demo"),
    ("statefulset", "demo"),
    ("networkpolicy", "demo"),  # on by default
]


def _exists(testbed: Any, namespace: str, kind: str, name: str) -> bool:
    result = testbed.kubectl("get", "-n", namespace, kind, name, check=False)
    return result.returncode == 0


def test_owned_objects_carry_owner_references_and_go_with_the_cluster(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    # A spec whose workers cannot start (unsafe sysctl refused up front would skip the
    # StatefulSet), so use a valid spec with a bounded footprint.
    apply_cluster(
        testbed,
        namespace,
        "demo",
        {"workers": 2, "workload": {"rateLimitBytesPerSecond": 1_000_000}},
    )
    uid = get_json(testbed, "-n", namespace, "cc", "demo")["metadata"]["uid"]
    for kind, name in OWNED:
        testbed.wait_for(
            lambda kind=kind, name=name: _exists(testbed, namespace, kind, name),
            60,
            f"{kind}/{name} created by the operator\n{operator.log()}",
        )
        meta = get_json(testbed, "-n", namespace, kind, name)["metadata"]
        owners = meta["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "w5xde.io/v1alpha1",
                "kind": "CompressionCluster",
                "name": "demo",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], kind

    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10
    ) as response:
        metrics = response.read().decode()
    reconciles = [
        line for line in metrics.splitlines() if line.startswith("w5xde_operator_reconciles_total{")
    ]
    assert any(float(line.split()[-1]) >= 1 for line in reconciles), metrics
    assert "w5xde_operator_reconcile_duration_seconds_count" in metrics
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=10
    ) as response:
        assert response.status == 200

    statefulset = get_json(testbed, "-n", namespace, "statefulset", "demo")
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert statefulset["spec"]["replicas"] == 2
    key = get_json(testbed, "-n", namespace, "secret", "demo-key")["data"]["key"]
    assert len(base64.b64decode(key)) == 64

    testbed.kubectl("delete", "-n", namespace, "cc", "demo", "--wait=true", "--timeout=60s")
    for kind, name in OWNED:
        testbed.wait_for(
            lambda kind=kind, name=name: not _exists(testbed, namespace, kind, name),
            90,
            f"{kind}/{name} garbage-collected with its cluster",
        )


def test_a_worker_holds_no_token_and_a_stolen_one_can_change_nothing(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    # What an earlier version gave its workers: a Role to patch the cluster status.
    for kind, body in (
        ("Role", {"rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
                             "verbs": ["get", "patch"]}]}),
        ("RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                     "name": "demo-worker"},
                         "subjects": [{"kind": "ServiceAccount", "name": "demo-worker",
                                       "namespace": namespace}]}),
    ):  # fmt: skip
        manifest = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "demo-worker", "namespace": namespace},
            **body,
        }
        testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    for name in ("demo", "other"):
        apply_cluster(
            testbed,
            namespace,
            name,
            {"workers": 1, "workload": {"rateLimitBytesPerSecond": 100_000}},
        )
    testbed.wait_for(
        lambda: _exists(testbed, namespace, "serviceaccount", "demo-worker"),
        60,
        f"the worker ServiceAccount\n{operator.log()}",
    )
    # The operator removed the permissions the old version granted.
    for kind in ("rolebinding", "role"):
        testbed.wait_for(
            lambda kind=kind: not _exists(testbed, namespace, kind, "demo-worker"),
            60,
            f"the retired worker {kind} removed\n{operator.log()}",
        )
    account = get_json(testbed, "-n", namespace, "serviceaccount", "demo-worker")
    assert account["automountServiceAccountToken"] is False
    testbed.wait_for(
        lambda: _exists(testbed, namespace, "pod", "demo-0"), 60, "the worker pod demo-0"
    )
    pod = get_json(testbed, "-n", namespace, "pod", "demo-0")["spec"]
    assert pod["automountServiceAccountToken"] is False
    # The API server injects no token volume into the pod.
    assert not [v for v in pod.get("volumes", []) if "serviceAccountToken" in json.dumps(v)]

    # Even a token minted for the worker account (stolen, say) can change nothing.
    api = token_client(testbed, namespace, "demo-worker")
    custom = client.CustomObjectsApi(api)
    merge = "application/merge-patch+json"
    denied = [
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "demo", {"status": {"phase": "Completed"}},
            _content_type=merge,
        ),
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "other",
            {"status": {"totals": {"batches": 10**9}}}, _content_type=merge,
        ),
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "demo", {"spec": {"workers": 9}},
            _content_type=merge,
        ),
        lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "demo"),
        lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
        lambda: client.CoreV1Api(api).list_namespaced_pod(namespace),
        lambda: client.CoreV1Api(api).read_namespaced_secret("demo-key", namespace),
    ]  # fmt: skip
    for index, call in enumerate(denied):
        with pytest.raises(ApiException) as error:
            call()
        assert error.value.status == 403, f"call {index} was not forbidden"


def test_a_key_secret_the_cluster_does_not_own_is_never_used(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    # Someone who can create Secrets in the namespace plants the key before the cluster.
    testbed.kubectl(
        "create", "secret", "generic", "planted-key", "-n", namespace,
        "--from-literal=key=" + "0" * 64,
    )  # fmt: skip
    apply_cluster(testbed, namespace, "planted", {"workers": 1})
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Degraded", "--timeout=60s", "cc/planted"
    )
    status = get_json(testbed, "-n", namespace, "cc", "planted")["status"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "KeySecretNotOwned"
    assert "planted-key" in degraded["message"]
    assert not _exists(testbed, namespace, "statefulset", "planted")
    reasons = testbed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=planted",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip
    assert "KeySecretNotOwned" in reasons

    # Removing it is the fix: the operator makes its own key and starts the workers.
    testbed.kubectl("delete", "secret", "planted-key", "-n", namespace)
    testbed.wait_for(
        lambda: _exists(testbed, namespace, "statefulset", "planted"),
        60,
        f"the workers started with a key of the operator's own\n{operator.log()}",
    )
    owners = get_json(testbed, "-n", namespace, "secret", "planted-key")["metadata"][
        "ownerReferences"
    ]
    assert owners[0]["name"] == "planted"
    assert (
        base64.b64decode(get_json(testbed, "-n", namespace, "secret", "planted-key")["data"]["key"])
        != b"0" * 64
    )
