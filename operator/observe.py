"""Turns listed pods and the StatefulSet into the plain states `status_folding` reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from w5xde.operator.observation import PodState, StatefulSetState

#: Container waiting reasons that will not fix themselves.
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def pod_state(pod: Mapping[str, Any]) -> PodState:
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return PodState(
        name=pod["metadata"]["name"],
        ready=ready,
        problem=pod_problem(status),
        ip=str(status.get("podIP") or ""),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        **_restarts(status.get("containerStatuses") or []),
    )


def _restarts(containers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Restart count, and when and how the last restarted container ended."""
    count = 0
    last_at: float | None = None
    last_exit = ""
    for container in containers:
        count += int(container.get("restartCount") or 0)
        ended = ((container.get("lastState") or {}).get("terminated")) or {}
        moment = _epoch(ended.get("finishedAt"))
        if moment is not None and (last_at is None or moment > last_at):
            last_at = moment
            last_exit = f"{ended.get('reason') or 'Terminated'} (exit {ended.get('exitCode', '?')})"
    return {"restarts": count, "last_restart_at": last_at, "last_exit": last_exit}


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def pod_summary(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields `pod_state` reads: what the operator keeps in its pod index."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {
            "name": metadata.get("name", ""),
            "deletionTimestamp": metadata.get("deletionTimestamp"),
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "message": status.get("message"),
            "podIP": status.get("podIP"),
            "conditions": [
                {k: item.get(k) for k in ("type", "status", "reason", "message")}
                for item in status.get("conditions") or []
            ],
            "containerStatuses": [
                {
                    "state": {"waiting": (item.get("state") or {}).get("waiting")},
                    "restartCount": item.get("restartCount", 0),
                    "lastState": {
                        "terminated": _terminated((item.get("lastState") or {}).get("terminated"))
                    },
                }
                for item in status.get("containerStatuses") or []
            ],
        },
    }


def _terminated(ended: Any) -> dict[str, Any] | None:
    if not isinstance(ended, Mapping):
        return None
    return {key: ended.get(key) for key in ("finishedAt", "exitCode", "reason")}


def pod_problem(status: Mapping[str, Any]) -> str:
    """Why a pod cannot run, in the kubelet's or scheduler's words; "" if it can."""
    if status.get("phase") == "Failed":
        reason = status.get("reason") or "Failed"
        return f"{reason}: {status.get('message', '')}".strip(": ")
    for item in status.get("conditions") or []:
        if (
            item.get("type") == "PodScheduled"
            and item.get("status") == "False"
            and item.get("reason") == "Unschedulable"
        ):
            return f"Unschedulable: {item.get('message', '')}".strip(": ")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING_REASONS:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    return ""


def pod_states(pods: Iterable[Mapping[str, Any]]) -> tuple[PodState, ...]:
    live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    return tuple(sorted((pod_state(pod) for pod in live), key=lambda state: state.name))


def statefulset_state(statefulset: Mapping[str, Any] | None) -> StatefulSetState | None:
    if not statefulset:
        return None
    spec = statefulset.get("spec") or {}
    status = statefulset.get("status") or {}
    generation = int(statefulset["metadata"].get("generation", 0))
    replicas = int(spec.get("replicas", 0))
    return StatefulSetState(
        replicas=replicas,
        ready_replicas=int(status.get("readyReplicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        current_revision=str(status.get("currentRevision", "")),
        update_revision=str(status.get("updateRevision", "")),
        up_to_date=int(status.get("observedGeneration", 0)) >= generation,
    )
