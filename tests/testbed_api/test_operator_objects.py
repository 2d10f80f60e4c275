"""The operator creates every owned object, owned by the cluster, and RBAC is tight."""

from __future__ import annotations

import base64
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from w5xde.worker.status_publisher import StatusPublisher

from w5xde.api.v1alpha1 import GROUP, PLURAL, VERSION, WorkerReport
from w5xde.worker.config import StatusTarget

from .conftest import OperatorProcess, apply_cluster, get_json

pytestmark = pytest.mark.testbed

OWNED = [
    ("serviceaccount", "demo-worker"),
    ("role", "demo-worker"),
    ("rolebinding", "demo-worker"),
    ("secret", "demo-key"),
    ("service", "demo"),
    ("statefulset", "demo"),
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


def _token_client(testbed: Any, namespace: str, account: str) -> client.ApiClient:
    token = testbed.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = testbed.api_client().configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


def test_worker_rbac_allows_its_own_status_and_nothing_else(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    for name in ("demo", "other"):
        apply_cluster(
            testbed,
            namespace,
            name,
            {"workers": 1, "workload": {"rateLimitBytesPerSecond": 100_000}},
        )
    testbed.wait_for(
        lambda: _exists(testbed, namespace, "rolebinding", "demo-worker"),
        60,
        f"the worker RoleBinding\n{operator.log()}",
    )
    api = _token_client(testbed, namespace, "demo-worker")

    seen: list[int] = []
    publisher = StatusPublisher(
        StatusTarget(namespace=namespace, cluster="demo", interval_seconds=1),
        "demo-7",
        lambda: WorkerReport(node="n1", batches=42),
        seen.append,
        api_client_factory=lambda: api,
    )
    assert publisher.publish_once(), "the worker could not patch its own cluster's status"
    assert seen == [1]  # spec.workers, read from the patch response
    assert publisher.published == 1
    # (The entry itself is dropped by the operator's next fold: there is no pod demo-7.)

    custom = client.CustomObjectsApi(api)
    denied = [
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "other", {"status": {"workers": {}}},
            _content_type="application/merge-patch+json",
        ),
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "demo", {"spec": {"workers": 9}},
            _content_type="application/merge-patch+json",
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
