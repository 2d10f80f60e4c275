"""The handlers' own decisions that need no API server: events, write-skipping, bad specs."""

from __future__ import annotations

from pydantic import ValidationError

from w5xde.api.v1alpha1 import CompressionClusterSpec, CompressionClusterStatus
from w5xde.operator.fold_loop import changes
from w5xde.operator.handlers import _change_events, _invalid_spec
from w5xde.operator.reconcile import OperatorContext, desired_state
from w5xde.operator.resources.metadata import ClusterRef

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1", generation=4)
CONTEXT = OperatorContext(default_image="w:1", server_version=(1, 37))


def test_fold_writes_are_skipped_when_only_condition_times_differ() -> None:
    current = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T1"}],
    }
    same = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T2"}],
    }
    assert not changes(current, same)
    assert changes(current, {**same, "phase": "Degraded"})
    # The reporting bookkeeping alone is not worth a write.
    assert not changes(current, {**same, "reporting": {"foldedAt": "T3"}})
    assert changes(current, {"totals": {"batches": 1}})


def test_change_events_created_scaled_rolled() -> None:
    spec = CompressionClusterSpec()
    first = desired_state(CLUSTER, spec, CONTEXT, existing_statefulset=None, cluster_key="k" * 64)
    assert [event.reason for event in _change_events("create", spec, first, None)] == ["Created"]
    running = next(obj for obj in first.objects if obj["kind"] == "StatefulSet")
    scaled_spec = CompressionClusterSpec.model_validate({"workers": 6})
    scaled = desired_state(
        CLUSTER, scaled_spec, CONTEXT, existing_statefulset=running, cluster_key="k" * 64
    )
    events = _change_events("update", scaled_spec, scaled, running)
    assert [(event.reason, event.message) for event in events] == [("Scaled", "workers 4 -> 6")]
    rolled_spec = CompressionClusterSpec.model_validate({"logMode": "verbose"})
    rolled = desired_state(
        CLUSTER, rolled_spec, CONTEXT, existing_statefulset=running, cluster_key="k" * 64
    )
    assert [event.reason for event in _change_events("update", rolled_spec, rolled, running)] == [
        "Rolled"
    ]


def test_a_spec_the_model_refuses_fails_the_cluster_naming_the_field() -> None:
    try:
        CompressionClusterSpec.model_validate({"network": {"chunkBytes": 8 << 20}})
    except ValidationError as error:
        patch, events = _invalid_spec(CLUSTER, CompressionClusterStatus(), error)
    assert patch["phase"] == "Failed"
    assert patch["observedGeneration"] == 4
    condition = patch["conditions"][0]
    assert condition["type"] == "Degraded"
    assert condition["observedGeneration"] == 4
    assert "spec.network" in condition["message"]
    assert "chunkBytes" in condition["message"]
    assert events[0].type == "Warning"
