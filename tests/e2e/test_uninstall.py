"""Uninstalling the operator while clusters exist leaves nothing stuck.

The operator folds status from one loop over kopf indexes, never a per-cluster kopf
timer or daemon, so kopf puts no finalizer on a CompressionCluster: once the operator
is gone, deleting a cluster's namespace still completes.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from testbed.fixtures import Testbed
from testbed.paths import REPO_ROOT

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

RELEASE = "w5xde-uninstall"
OPERATOR_NAMESPACE = "e2e-uninstall-system"
CLUSTER_NAMESPACE = "e2e-uninstall"


def _gone(testbed: Testbed, namespace: str) -> bool:
    return testbed.kubectl("get", "namespace", namespace, check=False).returncode != 0


def _let_helm_adopt_crds(testbed: Testbed) -> None:
    """CRDs stay after an uninstall (resource-policy keep): mark them as this release's."""
    rendered = testbed.helm(
        "template", RELEASE, str(REPO_ROOT / "charts" / "w5xde"),
        "--namespace", OPERATOR_NAMESPACE, "--kube-version", testbed.server_version(),
    ).stdout  # fmt: skip
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        name = doc["metadata"]["name"]
        if testbed.kubectl("get", "crd", name, check=False).returncode != 0:
            continue
        testbed.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        testbed.kubectl(
            "annotate", "--overwrite", "crd", name,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={OPERATOR_NAMESPACE}",
        )  # fmt: skip


def test_uninstall_with_a_cluster_present_then_its_namespace_deletes_within_30s(
    testbed: Testbed,
) -> None:
    for namespace in (OPERATOR_NAMESPACE, CLUSTER_NAMESPACE):
        testbed.wait_for(lambda ns=namespace: _gone(testbed, ns), 180, f"{namespace} gone")
    _let_helm_adopt_crds(testbed)
    testbed.helm(
        "install", RELEASE, str(REPO_ROOT / "charts" / "w5xde"),
        # Real nodes run the images `make images` built (nothing can be pulled).
        "-f", str(REPO_ROOT / "tests" / "chart_values" / "local-images.yaml"),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "3m",
        timeout=240,
    )  # fmt: skip
    installed = True
    try:
        testbed.kubectl("create", "namespace", CLUSTER_NAMESPACE)
        manifest = {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "metadata": {"name": "left", "namespace": CLUSTER_NAMESPACE},
            "spec": {"workers": 1, "workload": {"rateLimitBytesPerSecond": 1_000_000}},
        }
        testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest))

        def reconciled_and_folded() -> dict[str, object] | None:
            found = json.loads(
                testbed.kubectl("get", "cc", "left", "-n", CLUSTER_NAMESPACE, "-o", "json").stdout
            )
            status = found.get("status") or {}
            return found if status.get("observedGeneration") and status.get("reporting") else None

        cluster = testbed.wait_for(reconciled_and_folded, 120, "the operator folding the cluster")
        assert not cluster["metadata"].get("finalizers"), cluster["metadata"]

        testbed.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
        installed = False
        started = time.monotonic()
        testbed.kubectl("delete", "namespace", CLUSTER_NAMESPACE, "--wait=false")
        testbed.wait_for(
            lambda: _gone(testbed, CLUSTER_NAMESPACE),
            30,
            "the cluster's namespace deleted with no operator running",
        )
        print(f"namespace deleted {time.monotonic() - started:.1f} s after the uninstall")
    finally:
        if installed:
            testbed.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, check=False)
        testbed.kubectl("delete", "namespace", CLUSTER_NAMESPACE, "--wait=false", check=False)
        testbed.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=false", check=False)
