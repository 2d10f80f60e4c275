"""The workload's scale rules: all-to-all up to 64 workers, streams per worker bounded, mesh."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from w5xde.api.crd import CRD_PATH
from w5xde.api.v1alpha1 import (
    ALL_TO_ALL_TOO_BIG,
    MAX_STREAMS_PER_WORKER,
    TOO_MANY_STREAMS,
    CompressionClusterSpec,
    Topology,
    WorkloadSpec,
    peers_per_worker,
)


def spec(workers: int, **workload: object) -> CompressionClusterSpec:
    return CompressionClusterSpec.model_validate({"workers": workers, "workload": workload})


def test_mesh_has_a_default_degree_of_8() -> None:
    workload = WorkloadSpec(topology="mesh")
    assert workload.topology is Topology.MESH
    assert workload.mesh_degree == 8


@pytest.mark.parametrize("degree", [1, 65])
def test_mesh_degree_is_bounded(degree: int) -> None:
    with pytest.raises(ValidationError, match=r"meshDegree|mesh_degree"):
        WorkloadSpec(topology="mesh", mesh_degree=degree)


def test_all_to_all_is_refused_above_64_workers_naming_mesh() -> None:
    assert spec(64, topology="all-to-all").workers == 64
    with pytest.raises(ValidationError, match="use topology: mesh") as refused:
        spec(65, topology="all-to-all")
    assert "workload.topology" in str(refused.value)
    assert spec(1000, topology="mesh").workload.topology is Topology.MESH
    assert spec(1000, topology="ring").workers == 1000


@pytest.mark.parametrize(
    ("workers", "workload", "allowed"),
    [
        (64, {"topology": "all-to-all", "streamsPerPeer": 2}, True),  # 126 streams
        (64, {"topology": "all-to-all", "streamsPerPeer": 3}, False),  # 189
        (1000, {"topology": "mesh", "streamsPerPeer": 16}, True),  # 8 x 16 = 128
        (1000, {"topology": "mesh", "streamsPerPeer": 17}, False),
        (1000, {"topology": "mesh", "meshDegree": 64, "streamsPerPeer": 2}, True),
        (1000, {"topology": "mesh", "meshDegree": 64, "streamsPerPeer": 3}, False),
        # A mesh bigger than the cluster has workers - 1 peers.
        (5, {"topology": "mesh", "meshDegree": 64, "streamsPerPeer": 32}, True),
        (1000, {"topology": "ring", "streamsPerPeer": 64}, True),
    ],
)
def test_streams_per_worker_are_bounded(
    workers: int, workload: dict[str, object], allowed: bool
) -> None:
    if allowed:
        spec(workers, **workload)
    else:
        with pytest.raises(ValidationError, match="streamsPerPeer"):
            spec(workers, **workload)


def test_peers_per_worker() -> None:
    assert peers_per_worker(Topology.ALL_TO_ALL, 24, 8) == 23
    assert peers_per_worker(Topology.MESH, 24, 8) == 8
    assert peers_per_worker(Topology.MESH, 5, 8) == 4
    assert peers_per_worker(Topology.RING, 1, 8) == 0


def test_the_crd_carries_the_rules_on_the_spec_naming_the_fields() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {rule["fieldPath"]: rule for rule in schema["x-kubernetes-validations"]}
    assert rules[".workload.topology"]["message"] == ALL_TO_ALL_TOO_BIG
    assert "mesh" in rules[".workload.topology"]["message"]
    assert "<= 64" in rules[".workload.topology"]["rule"]
    assert rules[".workload.streamsPerPeer"]["message"] == TOO_MANY_STREAMS
    assert f"<= {MAX_STREAMS_PER_WORKER}" in rules[".workload.streamsPerPeer"]["rule"]
    workload = schema["properties"]["workload"]["properties"]
    assert "mesh" in workload["topology"]["enum"]
    assert workload["meshDegree"]["default"] == 8
    assert workload["meshDegree"]["minimum"] == 2
    assert workload["meshDegree"]["maximum"] == 64
