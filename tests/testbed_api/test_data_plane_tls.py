"""Mutual TLS on the test bed: the operator's CA, certificates for real pods, the switches."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pytest
from cryptography import x509

from .conftest import OperatorProcess, apply_cluster, get_json

pytestmark = pytest.mark.testbed

QUIET = {"rateLimitBytesPerSecond": 2_000_000, "batchBytes": 16384}


def _status(testbed: Any, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(testbed, "-n", namespace, "cc", name).get("status", {})
    return status


def _streaming(testbed: Any, namespace: str, name: str, workers: int) -> Any:
    def check() -> dict[str, Any] | None:
        status = _status(testbed, namespace, name)
        reporting = status.get("reporting", {}).get("workersReporting")
        if reporting == workers and status.get("throughputBytesPerSecond", 0) > 0:
            return status
        return None

    return check


def _operator_metric(operator: OperatorProcess, line_start: str) -> float:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10
    ) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


def test_workers_stream_over_mutual_tls_with_certificates_the_operator_signed(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "tls",
        {
            "workers": 3,
            "statusIntervalSeconds": 2,
            "workload": {**QUIET, "topology": "all-to-all"},
        },
    )
    status = testbed.wait_for(
        _streaming(testbed, namespace, "tls", 3), 150, f"3 workers streaming\n{operator.log()}"
    )
    assert status["totals"]["lostBatches"] == 0
    assert status["totals"]["corruptBatches"] == 0
    assert not [
        c for c in status["conditions"] if c["type"] == "Degraded" and c["status"] == "True"
    ]
    # Each pod made its own key and got a certificate for its own name.
    issued = _operator_metric(operator, 'w5xde_operator_certificates_total{result="issued"}')
    assert issued >= 3, operator.log()
    assert _operator_metric(operator, 'w5xde_operator_certificates_total{result="refused"}') == 0

    # The CA: a TLS Secret the cluster owns, whose certificate (only) the workers get.
    secret = get_json(testbed, "-n", namespace, "secret", "tls-ca")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["ownerReferences"][0]["name"] == "tls"
    ca_pem = base64.b64decode(secret["data"]["tls.crt"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    bundle = get_json(testbed, "-n", namespace, "configmap", "tls-ca")
    assert bundle["data"]["ca.crt"].encode() == ca_pem
    pod = get_json(testbed, "-n", namespace, "pod", "tls-0")["spec"]
    volumes = json.dumps(pod["volumes"])
    assert "tls-ca" in volumes
    assert '"secretName": "tls-ca"' not in volumes, "a pod mounts the CA key"
    scratch = next(v for v in pod["volumes"] if v["name"] == "tls-scratch")
    assert scratch["emptyDir"]["medium"] == "Memory"
    config = json.loads(
        next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == "W5XDE_CONFIG")
    )
    assert config["tls"] == {"source": "operator", "caFile": "/var/run/w5xde.io/ca/ca.crt"}


def test_tls_off_is_a_choice_that_shows_as_degraded(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "plain",
        {"workers": 2, "statusIntervalSeconds": 2, "workload": QUIET, "security": {"tls": False}},
    )
    testbed.wait_for(
        _streaming(testbed, namespace, "plain", 2), 150, f"2 workers streaming\n{operator.log()}"
    )
    status = _status(testbed, namespace, "plain")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "TLSDisabled")
    assert "security.tls is false" in degraded["message"]
    pod = get_json(testbed, "-n", namespace, "pod", "plain-0")["spec"]
    assert "tls-scratch" not in json.dumps(pod["volumes"])


def test_a_ca_secret_the_cluster_does_not_own_is_never_used(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    # Whoever planted it would hold the CA key and could mint any worker's identity.
    testbed.kubectl(
        "create", "secret", "generic", "planted-ca", "-n", namespace,
        "--from-literal=tls.crt=x", "--from-literal=tls.key=y",
    )  # fmt: skip
    apply_cluster(testbed, namespace, "planted", {"workers": 1, "workload": QUIET})
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Degraded", "--timeout=60s", "cc/planted"
    )
    status = _status(testbed, namespace, "planted")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "CASecretNotOwned"
    assert "planted-ca" in degraded["message"]
    result = testbed.kubectl("get", "statefulset", "planted", "-n", namespace, check=False)
    assert result.returncode != 0, "workers started with a planted CA"
    testbed.kubectl("delete", "secret", "planted-ca", "-n", namespace)
    testbed.wait_for(
        lambda: testbed.kubectl(
            "get", "statefulset", "planted", "-n", namespace, check=False
        ).returncode == 0,
        90,
        f"the workers started with a CA of the operator's own\n{operator.log()}",
    )  # fmt: skip
    owners = get_json(testbed, "-n", namespace, "secret", "planted-ca")["metadata"]
    assert owners["ownerReferences"][0]["name"] == "planted"


def test_the_cluster_key_rotates_without_a_restart(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "rot",
        {"workers": 2, "statusIntervalSeconds": 2, "workload": QUIET},
    )
    testbed.wait_for(
        _streaming(testbed, namespace, "rot", 2), 150, f"2 workers streaming\n{operator.log()}"
    )
    old_key = get_json(testbed, "-n", namespace, "secret", "rot-key")["data"]["key"]
    testbed.kubectl("annotate", "-n", namespace, "cc", "rot", "w5xde.io/rotate-key=first")

    def secret() -> dict[str, Any]:
        found: dict[str, Any] = get_json(testbed, "-n", namespace, "secret", "rot-key")
        return found

    testbed.wait_for(
        lambda: secret()["data"]["key"] != old_key,
        60,
        f"the operator to start the rotation\n{operator.log()}",
    )
    rotating = secret()
    assert rotating["data"]["previous-key"] == old_key
    assert rotating["metadata"]["annotations"]["w5xde.io/key-rotation"] == "first"
    # The kubelet brings the new files to the running workers; once both report the new
    # key the operator drops the old one.
    testbed.wait_for(
        lambda: "previous-key" not in secret()["data"],
        180,
        f"every worker to take the new key and the rotation to end\n{operator.log()}",
    )
    before = _status(testbed, namespace, "rot")["totals"]["batches"]
    testbed.wait_for(
        lambda: _status(testbed, namespace, "rot")["totals"]["batches"] > before + 100,
        60,
        "streaming to go on with the new key",
    )
    status = _status(testbed, namespace, "rot")
    assert status["reporting"]["workersReporting"] == 2
    assert status["totals"]["lostBatches"] == 0
    for pod in ("rot-0", "rot-1"):
        container = get_json(testbed, "-n", namespace, "pod", pod)["status"]["containerStatuses"][0]
        assert container["restartCount"] == 0, f"{pod} restarted for the rotation"
