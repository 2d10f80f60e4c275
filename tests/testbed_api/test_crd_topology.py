"""The API server refuses an all-to-all beyond 64 workers and too many streams, naming the
fields and `mesh`; a 1,000-worker mesh passes.  CEL evaluated by the real server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from w5xde.api.v1alpha1 import (
    ALL_TO_ALL_TOO_BIG,
    MAX_STREAMS_PER_WORKER,
    CompressionClusterSpec,
)

from .conftest import CRD_FILE, CRD_NAME, get_json

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def topology_crd(testbed: Any, crd: str) -> str:
    """This tree's CRD, even if an older one of the same name was already there."""
    testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    testbed.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    return crd


def _create(testbed: Any, namespace: str, spec: dict[str, Any], name: str, *, dry: bool) -> Any:
    manifest = json.dumps(
        {
            "apiVersion": "w5xde.io/v1alpha1",
            "kind": "CompressionCluster",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    extra = ["--dry-run=server"] if dry else []
    return testbed.kubectl(
        "create", *extra, "-n", namespace, "-f", "-", input=manifest, check=False
    )


def test_a_65_worker_all_to_all_is_refused_naming_the_field_and_mesh(
    testbed: Any, namespace: str, topology_crd: str
) -> None:
    spec = {"workers": 65, "workload": {"topology": "all-to-all"}}
    result = _create(testbed, namespace, spec, "a2a-65", dry=True)
    assert result.returncode != 0, "the server accepted a 65-worker all-to-all"
    assert "spec.workload.topology" in result.stderr, result.stderr
    assert ALL_TO_ALL_TOO_BIG in result.stderr, result.stderr
    assert "use topology: mesh" in result.stderr
    # The model refuses the same spec with the same words.
    with pytest.raises(ValueError, match="use topology: mesh"):
        CompressionClusterSpec.model_validate(spec)


def test_64_workers_all_to_all_and_1000_workers_mesh_are_accepted(
    testbed: Any, namespace: str, topology_crd: str
) -> None:
    assert _create(testbed, namespace, {"workers": 64, "workload": {"topology": "all-to-all"}},
                   "a2a-64", dry=True).returncode == 0  # fmt: skip
    result = _create(
        testbed, namespace, {"workers": 1000, "workload": {"topology": "mesh"}}, "mesh", dry=False
    )
    assert result.returncode == 0, result.stderr
    stored = get_json(testbed, "-n", namespace, "cc", "mesh")["spec"]
    assert stored["workload"]["meshDegree"] == 8  # the server applies the model's default
    assert CompressionClusterSpec.model_validate(stored).workload.mesh_degree == 8


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {"workers": 64, "workload": {"topology": "all-to-all", "streamsPerPeer": 3}},
            "spec.workload.streamsPerPeer",
            f"at most {MAX_STREAMS_PER_WORKER} streams per worker",
        ),
        (
            {"workers": 1000, "workload": {"topology": "mesh", "streamsPerPeer": 17}},
            "spec.workload.streamsPerPeer",
            f"at most {MAX_STREAMS_PER_WORKER} streams per worker",
        ),
        ({"workload": {"topology": "mesh", "meshDegree": 1}}, "spec.workload.meshDegree", "2"),
        ({"workload": {"topology": "mesh", "meshDegree": 65}}, "spec.workload.meshDegree", "64"),
    ],
    ids=["all-to-all-189-streams", "mesh-136-streams", "degree-1", "degree-65"],
)
def test_streams_per_worker_and_the_degree_are_bounded(
    testbed: Any,
    namespace: str,
    topology_crd: str,
    spec: dict[str, Any],
    field: str,
    words: str,
) -> None:
    result = _create(testbed, namespace, spec, "streams", dry=True)
    assert result.returncode != 0, f"accepted: {spec}"
    assert field in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_scaling_an_all_to_all_past_64_is_refused(
    testbed: Any, namespace: str, topology_crd: str
) -> None:
    """`kubectl scale` goes through the scale subresource; the rule still holds."""
    created = _create(
        testbed, namespace, {"workers": 60, "workload": {"topology": "all-to-all"}}, "grow",
        dry=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    result = testbed.kubectl(
        "scale", "cc", "grow", "-n", namespace, "--replicas", "65", check=False
    )
    assert result.returncode != 0, "scaled an all-to-all to 65 workers"
    assert "use topology: mesh" in result.stderr, result.stderr
    assert get_json(testbed, "-n", namespace, "cc", "grow")["spec"]["workers"] == 60
