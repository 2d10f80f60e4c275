from __future__ import annotations

from typing import Any

from w5xde.operator.observe import pod_problem, pod_states, statefulset_state


def _pod(name: str, status: dict[str, Any], deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


def test_ready_and_problems_are_read_from_pod_status() -> None:
    pods = [
        _pod("d-1", {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        _pod("d-0", {"phase": "Failed", "reason": "SysctlForbidden", "message": "no"}),
        _pod("d-2", {"phase": "Running"}, deleting=True),
    ]
    states = pod_states(pods)
    assert [state.name for state in states] == ["d-0", "d-1"]
    assert states[0].problem == "SysctlForbidden: no"
    assert states[1].ready
    assert states[1].problem == ""


def test_unschedulable_and_stuck_containers_are_problems() -> None:
    unschedulable = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes match",
            }
        ],
    }
    assert pod_problem(unschedulable) == "Unschedulable: 0/2 nodes match"
    crashing = {
        "phase": "Running",
        "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }
    assert pod_problem(crashing) == "CrashLoopBackOff"
    starting = {
        "phase": "Pending",
        "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
    }
    assert pod_problem(starting) == ""


def test_statefulset_rollout_state() -> None:
    assert statefulset_state(None) is None
    state = statefulset_state(
        {
            "metadata": {"generation": 3},
            "spec": {"replicas": 4},
            "status": {
                "observedGeneration": 3,
                "readyReplicas": 4,
                "updatedReplicas": 4,
                "currentRevision": "a",
                "updateRevision": "a",
            },
        }
    )
    assert state is not None
    assert state.rolled_out
    behind = statefulset_state({"metadata": {"generation": 4}, "spec": {"replicas": 4}})
    assert behind is not None
    assert not behind.rolled_out
