"""The kopf handlers: they observe, call the pure parts, and apply what those return.

Change handlers (create, resume after an operator restart, spec update) apply the owned
objects; a timer folds the workers' reports into the status.  Both write complete status
patches computed by the same function, so whichever lands last is right.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    GROUP,
    PLURAL,
    VERSION,
    CompressionClusterSpec,
    CompressionClusterStatus,
    Phase,
)
from w5xde.operator import metrics
from w5xde.operator.kube import Kube
from w5xde.operator.observe import pod_states, statefulset_state
from w5xde.operator.reconcile import Desired, OperatorContext, desired_state, spec_problems
from w5xde.operator.resources.metadata import ClusterRef, selector_labels, selector_string
from w5xde.operator.resources.secret import new_cluster_key
from w5xde.operator.status_folding import (
    Event,
    Fold,
    Observation,
    Problem,
    fold_status,
    isoformat,
    parse_status,
)

RESOURCE = (GROUP, VERSION, PLURAL)
#: API errors worth a quick retry rather than kopf's default backoff.
RETRY_DELAY_SECONDS = 5


@dataclass(frozen=True)
class Runtime:
    kube: Kube
    context: OperatorContext
    fold_interval_seconds: float


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Attach the handlers for CompressionClusters to `registry`."""

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A fresh registry has none of kopf's default login handlers.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    # Stable ids: kopf keys its progress annotations by them.
    @kopf.on.resume(*RESOURCE, id="reconcile", registry=registry)
    @kopf.on.create(*RESOURCE, id="reconcile", registry=registry)
    @kopf.on.update(*RESOURCE, id="reconcile", field="spec", registry=registry)
    def reconcile_cluster(
        body: kopf.Body,
        patch: kopf.Patch,
        reason: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **_: Any,
    ) -> None:
        started = time.monotonic()
        metrics.RECONCILES.labels(reason=str(reason)).inc()
        try:
            status_patch, events = reconcile(runtime, body, str(reason))
        except ApiException as error:
            metrics.ERRORS.labels(stage="reconcile").inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=RETRY_DELAY_SECONDS
            ) from error
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        patch.setdefault("status", {}).update(status_patch)
        post_events(body, events)
        logger.info("reconciled (%s): %s", reason, status_patch.get("phase"))

    @kopf.timer(
        *RESOURCE,
        id="fold",
        interval=runtime.fold_interval_seconds,
        sharp=False,
        registry=registry,
    )
    def fold_cluster(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            status_patch, events = refresh(runtime, body)
        except ApiException as error:
            metrics.ERRORS.labels(stage="fold").inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=RETRY_DELAY_SECONDS
            ) from error
        metrics.FOLDS.inc()
        if status_patch and _changes(body.get("status") or {}, status_patch):
            patch.setdefault("status", {}).update(status_patch)
        post_events(body, events)


def reconcile(
    runtime: Runtime, body: Mapping[str, Any], reason: str
) -> tuple[dict[str, Any], list[Event]]:
    """Apply every owned object for the current spec; the status patch and Events to post."""
    cluster = ClusterRef.from_body(body)
    status = parse_status(body.get("status"))
    try:
        spec = CompressionClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return _invalid_spec(cluster, error)
    completed = _completed_and_current(status, cluster)
    if status.phase is Phase.COMPLETED and not completed:
        # A spec change after a bounded run starts a new run.
        status = status.model_copy(update={"started_at": None, "completed_at": None})
    existing = runtime.kube.read_statefulset(cluster.namespace, cluster.statefulset)
    desired = _desired(runtime, cluster, spec, existing, completed=completed)
    applied_statefulset = apply_desired(runtime.kube, desired)
    events = _change_events(reason, spec, desired, existing)
    fold = observe(
        runtime,
        cluster,
        spec,
        status,
        applied_generation=cluster.generation,
        statefulset=applied_statefulset or existing,
    )
    identity = {"observedGeneration": cluster.generation, "selector": selector_string(cluster)}
    status_patch = identity if completed else {**identity, **fold.patch}
    return status_patch, events + list(fold.events)


def refresh(runtime: Runtime, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[Event]]:
    """The timer's look at one cluster: fold reports, repair a missing StatefulSet,
    and end a bounded run by scaling it to zero."""
    cluster = ClusterRef.from_body(body)
    status = parse_status(body.get("status"))
    try:
        spec = CompressionClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return {}, []  # the change handler already reported it
    if status.observed_generation == 0:
        return {}, []  # not reconciled yet: nothing to fold
    if _completed_and_current(status, cluster):
        _ensure_stopped(runtime, cluster, spec)
        return {}, []
    statefulset = runtime.kube.read_statefulset(cluster.namespace, cluster.statefulset)
    problems, fatal = spec_problems(spec, runtime.context)
    events: list[Event] = []
    if statefulset is None and fatal is None and not _refused(problems):
        statefulset = apply_desired(runtime.kube, _desired(runtime, cluster, spec, None))
        events.append(Event("Normal", "Repaired", "re-created the missing worker StatefulSet"))
    fold = observe(
        runtime,
        cluster,
        spec,
        status,
        applied_generation=status.observed_generation,
        statefulset=statefulset,
    )
    if fold.completed:
        apply_desired(runtime.kube, _desired(runtime, cluster, spec, statefulset, completed=True))
    return fold.patch, events + list(fold.events)


def observe(
    runtime: Runtime,
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    *,
    applied_generation: int,
    statefulset: Mapping[str, Any] | None,
) -> Fold:
    pods = runtime.kube.list_pods(cluster.namespace, selector_labels(cluster))
    problems, fatal = spec_problems(spec, runtime.context)
    observation = Observation(
        now=datetime.now(UTC),
        generation=cluster.generation,
        applied_generation=applied_generation,
        statefulset=statefulset_state(statefulset),
        pods=pod_states(pods),
        problems=problems,
        fatal=fatal,
    )
    return fold_status(spec, status, observation)


def apply_desired(kube: Kube, desired: Desired) -> dict[str, Any] | None:
    """Apply the objects; the applied StatefulSet as the server returned it, if any."""
    kube.create_if_absent(desired.secret)
    applied = None
    for obj in desired.objects:
        result = kube.apply(obj)
        if obj["kind"] == "StatefulSet":
            applied = result
    return applied


def post_events(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        metrics.EVENTS.labels(reason=event.reason).inc()
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _desired(
    runtime: Runtime,
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    existing: Mapping[str, Any] | None,
    *,
    completed: bool = False,
) -> Desired:
    return desired_state(
        cluster,
        spec,
        runtime.context,
        existing_statefulset=existing,
        cluster_key=new_cluster_key(),
        completed=completed,
    )


def _ensure_stopped(runtime: Runtime, cluster: ClusterRef, spec: CompressionClusterSpec) -> None:
    statefulset = runtime.kube.read_statefulset(cluster.namespace, cluster.statefulset)
    if statefulset and int((statefulset.get("spec") or {}).get("replicas", 0)) > 0:
        apply_desired(runtime.kube, _desired(runtime, cluster, spec, statefulset, completed=True))


def _completed_and_current(status: CompressionClusterStatus, cluster: ClusterRef) -> bool:
    return status.phase is Phase.COMPLETED and status.observed_generation >= cluster.generation


def _refused(problems: tuple[Problem, ...]) -> bool:
    return any(problem.reason == "UnsafeSysctls" for problem in problems)


def _change_events(
    reason: str,
    spec: CompressionClusterSpec,
    desired: Desired,
    existing: Mapping[str, Any] | None,
) -> list[Event]:
    events: list[Event] = []
    if existing is None and any(obj["kind"] == "StatefulSet" for obj in desired.objects):
        events.append(Event("Normal", "Created", f"created {spec.workers} workers"))
    if desired.scaled_from is not None:
        events.append(
            Event("Normal", "Scaled", f"workers {desired.scaled_from} -> {desired.replicas}")
        )
    if desired.rolled:
        events.append(Event("Normal", "Rolled", f"spec changed: rolling the workers ({reason})"))
    for problem in desired.problems:
        if problem.reason == "UnsafeSysctls":
            events.append(Event("Warning", problem.reason, problem.message))
    return events


def _invalid_spec(
    cluster: ClusterRef, error: ValidationError
) -> tuple[dict[str, Any], list[Event]]:
    message = "; ".join(
        f"spec.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        for item in error.errors()
    )
    now = isoformat(datetime.now(UTC))
    condition = {
        "type": "Degraded",
        "status": "True",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": cluster.generation,
    }
    patch = {
        "observedGeneration": cluster.generation,
        "phase": Phase.FAILED.value,
        "conditions": [condition],
    }
    return patch, [Event("Warning", "InvalidSpec", message)]


def _changes(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether the patch would change anything (condition times aside), to spare writes."""
    for key, value in patch.items():
        if key == "conditions":
            if _without_times(current.get(key)) != _without_times(value):
                return True
        elif key == "workers" or current.get(key) != value:
            return True
    return False


def _without_times(conditions: Any) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in item.items() if k != "lastTransitionTime"} for item in conditions or []
    ]
