"""The pydantic mirrors of the CRD's CEL rules refuse what the API server refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CHUNK_WITHIN_BUFFER,
    FILE_NEEDS_PATH,
    CompressionClusterSpec,
    CompressionClusterStatus,
    LogMode,
    NetworkSpec,
    WorkloadSpec,
)

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_chunk_may_not_exceed_a_set_buffer() -> None:
    with pytest.raises(ValidationError, match="chunkBytes must not be larger"):
        NetworkSpec(socket_buffer_bytes=65536, chunk_bytes=131072)
    assert NetworkSpec(socket_buffer_bytes=0, chunk_bytes=1 << 20).chunk_bytes == 1 << 20
    assert "socketBufferBytes" in CHUNK_WITHIN_BUFFER


def test_file_source_needs_a_path() -> None:
    with pytest.raises(ValidationError, match=r"workload\.path is required"):
        WorkloadSpec(source="file")
    assert WorkloadSpec(source="file", path="/data").path == "/data"
    assert "workload.path" in FILE_NEEDS_PATH


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("vm.swappiness", "only namespaced sysctls"),
        ("net.core.rmem_max", "node-wide"),
        ("Net.IPv4.x", "not a dotted kernel parameter name"),
    ],
)
def test_sysctl_names_are_checked(name: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        NetworkSpec(sysctls={name: "1"})


def test_namespaced_sysctls_pass_the_model() -> None:
    spec = NetworkSpec(sysctls={"net.ipv4.tcp_syncookies": "1", "kernel.shm_rmid_forced": "1"})
    assert len(spec.sysctls) == 2


@pytest.mark.parametrize(
    ("given", "mode"), [("1", "silent"), (2, "normal"), ("VERBOSE", "verbose")]
)
def test_log_mode_aliases(given: object, mode: str) -> None:
    assert CompressionClusterSpec.model_validate({"logMode": given}).log_mode == LogMode(mode)


def test_unknown_fields_are_refused_with_their_name() -> None:
    with pytest.raises(ValidationError, match="workerz"):
        CompressionClusterSpec.model_validate({"workerz": 3})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_examples_are_valid_specs(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == "w5xde.io/v1alpha1"
    assert document["kind"] == "CompressionCluster"
    CompressionClusterSpec.model_validate(document["spec"])


def test_there_are_at_least_three_examples() -> None:
    names = {path.name for path in EXAMPLES}
    assert "cluster.yaml" in names
    assert len(names) >= 3


def test_status_round_trips_through_camel_case() -> None:
    raw = {
        "phase": "Running",
        "ready": "4/4",
        "readyWorkers": 4,
        "notableWorkers": [{"name": "demo-3", "node": "n2", "reason": "Slowest"}],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "WorkersReady", "observedGeneration": 2}
        ],
        "startedAt": None,
    }
    status = CompressionClusterStatus.model_validate(raw)
    assert status.notable_workers[0].reason == "Slowest"
    dumped = status.model_dump(mode="json", by_alias=True)
    assert dumped["readyWorkers"] == 4
    assert dumped["conditions"][0]["observedGeneration"] == 2
