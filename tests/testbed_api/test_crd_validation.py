"""The API server applies the CRD's defaults and refuses bad specs, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from w5xde.api.v1alpha1 import CompressionClusterSpec

from .conftest import get_json

pytestmark = pytest.mark.testbed


def _manifest(spec: dict[str, Any], name: str = "bad") -> str:
    return json.dumps(
        {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def test_server_fills_in_the_model_defaults(testbed: Any, namespace: str, crd: str) -> None:
    testbed.kubectl("create", "-n", namespace, "-f", "-", input=_manifest({}, "plain"))
    stored = get_json(testbed, "-n", namespace, "cc", "plain")["spec"]
    assert stored["workers"] == 4
    assert stored["logMode"] == "silent"
    assert stored["workload"]["batchBytes"] == 65536
    assert stored["workload"]["topology"] == "ring"
    assert stored["compression"] == {
        "codec": "zstd",
        "context": "stream",
        "level": 3,
        "threads": 1,
    }
    assert stored["network"]["socketBufferBytes"] == 4 * 1024 * 1024
    assert stored["network"]["tcpQuickAck"] is True
    assert stored["statusIntervalSeconds"] == 10
    # What the server stored is exactly what the model means by "defaults".
    assert CompressionClusterSpec.model_validate(stored) == CompressionClusterSpec()


def test_short_name_and_printer_columns(testbed: Any, namespace: str, crd: str) -> None:
    testbed.kubectl("create", "-n", namespace, "-f", "-", input=_manifest({}, "cols"))
    header = testbed.kubectl("get", "cc", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PHASE", "THROUGHPUT", "RATIO", "BATCHES/S", "AGE"]


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("workers-zero", {"workers": 0}, "spec.workers", "greater than or equal to 1"),
    ("workers-too-many", {"workers": 1001}, "spec.workers", "less than or equal to 1000"),
    ("workers-text", {"workers": "four"}, "spec.workers", "must be of type integer"),
    ("log-mode", {"logMode": "loud"}, "spec.logMode", 'Unsupported value: "loud"'),
    ("duration", {"duration": "soon"}, "spec.duration", "should match"),
    (
        "batch-small",
        {"workload": {"batchBytes": 10}},
        "spec.workload.batchBytes",
        "greater than or equal to 64",
    ),
    (
        "topology",
        {"workload": {"topology": "star"}},
        "spec.workload.topology",
        'Unsupported value: "star"',
    ),
    (
        "file-no-path",
        {"workload": {"source": "file"}},
        "spec.workload.path",
        "workload.path is required when workload.source is 'file'",
    ),
    (
        "level",
        {"compression": {"level": 23}},
        "spec.compression.level",
        "must be an integer -7..22 or 'auto'",
    ),
    (
        "codec",
        {"compression": {"codec": "lz4"}},
        "spec.compression.codec",
        'Unsupported value: "lz4"',
    ),
    ("port", {"network": {"port": 80}}, "spec.network.port", "greater than or equal to 1024"),
    (
        "chunk-over-buffer",
        {"network": {"socketBufferBytes": 65536, "chunkBytes": 131072}},
        "spec.network.chunkBytes",
        "must not be larger than network.socketBufferBytes",
    ),
    (
        "sysctl-not-namespaced",
        {"network": {"sysctls": {"vm.swappiness": "10"}}},
        "spec.network.sysctls",
        "only namespaced sysctls",
    ),
    (
        "sysctl-node-wide",
        {"network": {"sysctls": {"net.core.rmem_max": "16777216"}}},
        "spec.network.sysctls",
        "node-wide",
    ),
    (
        "interval",
        {"statusIntervalSeconds": 0},
        "spec.statusIntervalSeconds",
        "greater than or equal to 1",
    ),
    (
        "interval-too-long",
        {"statusIntervalSeconds": 3601},
        "spec.statusIntervalSeconds",
        "less than or equal to 3600",
    ),
    ("unknown-field", {"workerz": 3}, "workerz", "unknown field"),
    (
        "expect-unknown",
        {"duration": "10s", "expect": {"minThroughput": 3}},
        "spec.expect.minThroughput",
        "unknown field",
    ),
    (
        "expect-negative",
        {"duration": "10s", "expect": {"maxLostBatches": -1}},
        "spec.expect.maxLostBatches",
        "greater than or equal to 0",
    ),
    (
        "expect-unbounded",
        {"expect": {"minThroughputBytesPerSecond": 1e8}},
        "spec.expect",
        "expectations are checked when a run ends",
    ),
    (
        "expect-ratio-without-codec",
        {"duration": "10s", "compression": {"codec": "none"}, "expect": {"minCompressionRatio": 2}},
        "spec.expect.minCompressionRatio",
        "with compression.codec none the ratio is 1",
    ),
    (
        "samples-unbounded",
        {"samples": 3},
        "spec.samples",
        "more than one sample repeats a bounded run",
    ),
    (
        "samples-too-many",
        {"duration": "10s", "samples": 21},
        "spec.samples",
        "less than or equal to 20",
    ),
    (
        "cert-manager-without-issuer",
        {"security": {"certificates": "certManager"}},
        "spec.security.issuerRef",
        "security.issuerRef is required when certificates is certManager",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "rule"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_spec_is_refused_naming_the_field(
    testbed: Any, namespace: str, crd: str, spec: dict[str, Any], field: str, rule: str
) -> None:
    result = testbed.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-",
        input=_manifest(spec), check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"accepted: {spec}"
    # One message names both the field and the rule it broke.
    assert any(field in line and rule in line for line in result.stderr.splitlines()), result.stderr


def test_too_long_name_is_refused(testbed: Any, namespace: str, crd: str) -> None:
    result = testbed.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-",
        input=_manifest({}, "x" * 53), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "metadata.name must be at most 52 characters" in result.stderr


def test_valid_edge_spec_is_accepted(testbed: Any, namespace: str, crd: str) -> None:
    spec = {
        "workers": 1000,
        "logMode": "3",
        "duration": "1h30m",
        "workload": {"source": "file", "path": "/data", "batchBytes": 64},
        "compression": {"level": -7, "threads": 0},
        "network": {
            "socketBufferBytes": 0,
            "chunkBytes": 16 * 1024 * 1024,
            "sysctls": {"net.ipv4.tcp_syncookies": "1", "kernel.shm_rmid_forced": "1"},
        },
        "resources": {"requests": {"cpu": "100m"}},
        "tolerations": [{"operator": "Exists"}],
    }
    testbed.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=_manifest(spec, "edge")
    )


EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_pass_the_server(testbed: Any, namespace: str, crd: str, example: Path) -> None:
    testbed.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(example))
