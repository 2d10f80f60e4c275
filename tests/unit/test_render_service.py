from __future__ import annotations

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.resources.metadata import ClusterRef, selector_labels
from w5xde.operator.resources.service import render_service

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_headless_service_publishes_not_ready_peers() -> None:
    service = render_service(CLUSTER, CompressionClusterSpec())
    spec = service["spec"]
    assert service["metadata"]["name"] == "demo"
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["selector"] == selector_labels(CLUSTER)
    assert {port["name"]: port["port"] for port in spec["ports"]} == {
        "data": 7070,
        "metrics": 9090,
    }


def test_service_follows_the_data_port() -> None:
    spec = CompressionClusterSpec.model_validate({"network": {"port": 9000}})
    ports = render_service(CLUSTER, spec)["spec"]["ports"]
    assert ports[0]["port"] == 9000
