"""A CompressionCluster cannot shape its pods into arbitrary pods: no hostPath."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.testbed


def _cluster(namespace: str, volumes: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "metadata": {"name": "shaped", "namespace": namespace},
            "spec": {"volumes": volumes},
        }
    )


def test_allowed_volume_sources_pass(testbed: Any, namespace: str, crd: str) -> None:
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "corpus"}},
        {"name": "conf", "configMap": {"name": "settings"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    result = testbed.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=_cluster(namespace, volumes)
    )
    stored = json.loads(result.stdout)["spec"]["volumes"]
    assert stored == volumes  # the bodies reach the pod unchanged


def test_host_path_is_refused_naming_the_field(testbed: Any, namespace: str, crd: str) -> None:
    host = [{"name": "root", "hostPath": {"path": "/"}}]
    strict = testbed.kubectl("apply", "-f", "-", input=_cluster(namespace, host), check=False)
    assert strict.returncode != 0
    assert 'unknown field "spec.volumes[0].hostPath"' in strict.stderr
    # A client that does not ask for strict validation: the unknown source is pruned,
    # and a volume without an allowed source is refused by the CRD's rule.
    lenient = testbed.kubectl(
        "apply", "--validate=false", "-f", "-", input=_cluster(namespace, host), check=False
    )
    assert lenient.returncode != 0
    assert "spec.volumes[0]" in lenient.stderr
    assert "exactly one source of configMap, secret" in lenient.stderr
    two = [{"name": "both", "emptyDir": {}, "secret": {"secretName": "s"}}]
    doubled = testbed.kubectl("apply", "-f", "-", input=_cluster(namespace, two), check=False)
    assert doubled.returncode != 0
    assert "exactly one source" in doubled.stderr
