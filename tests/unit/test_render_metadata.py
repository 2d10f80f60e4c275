"""Every owned object is owned by its cluster and labelled for it."""

from __future__ import annotations

from typing import Any

import pytest

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.reconcile import OperatorContext, desired_state
from w5xde.operator.resources.metadata import ClusterRef, owner_reference

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1", generation=3)
CONTEXT = OperatorContext(default_image="w5xde-worker:dev", server_version=(1, 37))


def _all_objects() -> list[dict[str, Any]]:
    desired = desired_state(
        CLUSTER,
        CompressionClusterSpec(),
        CONTEXT,
        existing_statefulset=None,
        cluster_key="k" * 64,
    )
    return [*desired.objects, desired.secret]


def test_every_kind_is_rendered() -> None:
    kinds = sorted(obj["kind"] for obj in _all_objects())
    assert kinds == sorted(["ServiceAccount", "Secret", "Service", "StatefulSet"])


@pytest.mark.parametrize("obj", _all_objects(), ids=lambda obj: obj["kind"])
def test_owner_reference_namespace_and_labels(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert meta["namespace"] == "ns1"
    assert meta["ownerReferences"] == [owner_reference(CLUSTER)]
    reference = meta["ownerReferences"][0]
    assert reference["controller"] is True
    assert reference["uid"] == "uid-1"
    assert reference["kind"] == "CompressionCluster"
    assert reference["apiVersion"] == "w5xde.io/v1alpha1"
    assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
    assert meta["labels"]["w5xde.io/cluster"] == "demo"


def test_cluster_ref_from_a_body() -> None:
    body = {"metadata": {"name": "a", "namespace": "b", "uid": "c", "generation": 7}}
    assert ClusterRef.from_body(body) == ClusterRef("a", "b", "c", 7)
