"""The kopf handlers: they observe, call the pure parts, and apply what those return.

Change handlers (create, resume after an operator restart, spec update) apply the owned
objects and record the generation they applied.  Everything the workers report is
folded by one `FoldLoop` that reads kopf indexes of clusters, worker pods and
StatefulSets: no per-cluster timer, so kopf puts no finalizer on any cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CONDITION_MESSAGE_MAX,
    GROUP,
    PLURAL,
    VERSION,
    CompressionClusterSpec,
    CompressionClusterStatus,
    ConditionType,
    Phase,
    parse_status,
    status_patch,
)
from w5xde.operator import metrics
from w5xde.operator.apply import (
    Runtime,
    ensure_owned,
    is_completed,
    keeps_no_workers,
    post_events,
    remove_absent,
    remove_retired_worker_rbac,
)
from w5xde.operator.conditions import condition, merge_conditions
from w5xde.operator.fold_loop import FoldLoop, cluster_summary
from w5xde.operator.observation import Event, EventType, Reason
from w5xde.operator.observe import pod_summary
from w5xde.operator.reconcile import Desired
from w5xde.operator.resources.metadata import (
    CLUSTER_LABEL,
    COMPONENT,
    MANAGED_BY,
    ClusterRef,
    selector_string,
)
from w5xde.operator.runs import isoformat

RESOURCE = (GROUP, VERSION, PLURAL)
#: API errors worth a quick retry rather than kopf's default backoff.
RETRY_DELAY_SECONDS = 5
OWNED_BY_US = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": COMPONENT}


def register(registry: kopf.OperatorRegistry, runtime: Runtime, fold_loop: FoldLoop) -> None:
    """Attach the handlers, indexes and the fold loop for CompressionClusters to `registry`."""

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
            applied, events = reconcile(runtime, body, str(reason))
        except ApiException as error:
            metrics.ERRORS.labels(stage="reconcile").inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=RETRY_DELAY_SECONDS
            ) from error
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        patch.setdefault("status", {}).update(applied)
        post_events(body, events)
        logger.info("reconciled (%s): generation %s", reason, applied.get("observedGeneration"))

    _register_indexes(registry, fold_loop)
    _register_fold_loop(registry, fold_loop)


def _register_indexes(registry: kopf.OperatorRegistry, fold_loop: FoldLoop) -> None:
    """The kopf indexes the fold loop reads: clusters, worker pods, worker StatefulSets."""

    @kopf.index(*RESOURCE, id="clusters_index", registry=registry)
    async def clusters_index(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        summary = cluster_summary(body)
        fold_loop.notice((namespace or "", name), summary)
        return {(namespace or "", name): summary}

    @kopf.index("v1", "pods", labels=OWNED_BY_US, id="pods_index", registry=registry)
    async def pods_index(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        return {(namespace or "", labels.get(CLUSTER_LABEL, "")): pod_summary(body)}

    @kopf.index(
        "apps", "v1", "statefulsets", labels=OWNED_BY_US, id="statefulsets_index", registry=registry
    )
    async def statefulsets_index(
        namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        return {(namespace or "", labels.get(CLUSTER_LABEL, "")): _statefulset_summary(body)}


def _register_fold_loop(registry: kopf.OperatorRegistry, fold_loop: FoldLoop) -> None:
    """The fold loop runs from kopf's startup to its cleanup; liveness fails if it died."""

    @kopf.on.startup(id="fold_loop", registry=registry)
    async def start_fold_loop(memo: kopf.Memo, **kwargs: Any) -> None:
        memo["fold_task"] = asyncio.create_task(
            fold_loop.run(
                kwargs["clusters_index"], kwargs["pods_index"], kwargs["statefulsets_index"]
            ),
            name="w5xde fold loop",
        )

    @kopf.on.cleanup(id="fold_loop", registry=registry)
    async def stop_fold_loop(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("fold_task")
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @kopf.on.probe(id="fold_loop", registry=registry)
    def fold_loop_alive(memo: kopf.Memo, **_: Any) -> int:
        """Liveness fails when the fold loop died, so the kubelet restarts the operator."""
        task = memo.get("fold_task")
        if task is None or task.done():
            raise RuntimeError("the fold loop is not running")
        return fold_loop.folds


def reconcile(
    runtime: Runtime, body: Mapping[str, Any], reason: str
) -> tuple[dict[str, Any], list[Event]]:
    """Apply every owned object for the current spec; the status patch and Events to post."""
    cluster = ClusterRef.from_body(body)
    raw_status = body.get("status") or {}
    status = parse_status(raw_status)
    try:
        spec = CompressionClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return _invalid_spec(cluster, status, error)
    completed = is_completed(status, cluster.generation)
    no_workers = keeps_no_workers(status, cluster.generation)
    existing = runtime.kube.read_statefulset(cluster.namespace, cluster.statefulset)
    owned = ensure_owned(runtime, cluster, spec, existing, completed=no_workers)
    desired, foreign_key = owned.desired, owned.problem
    remove_retired_worker_rbac(runtime.kube, cluster)
    remove_absent(runtime.kube, cluster, desired)
    events = _change_events(reason, spec, desired, existing)
    if foreign_key is not None:
        events = [Event(EventType.WARNING, foreign_key.reason, foreign_key.message)]
    applied = CompressionClusterStatus(
        observed_generation=cluster.generation, selector=selector_string(cluster)
    )
    if status.phase is Phase.COMPLETED and not completed:
        # A spec change after a bounded run starts a new run.
        applied = applied.model_copy(
            update={"phase": Phase.PENDING, "started_at": None, "completed_at": None}
        )
    elif "phase" not in raw_status:
        applied = applied.model_copy(update={"phase": Phase.PENDING})
    return status_patch(applied), events


def _statefulset_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields `observe.statefulset_state` and the completion check read."""
    metadata = body.get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "generation": metadata.get("generation"),
            "annotations": dict(metadata.get("annotations") or {}),
        },
        "spec": {"replicas": (body.get("spec") or {}).get("replicas", 0)},
        "status": dict(body.get("status") or {}),
    }


def _change_events(
    reason: str,
    spec: CompressionClusterSpec,
    desired: Desired,
    existing: Mapping[str, Any] | None,
) -> list[Event]:
    events: list[Event] = []
    if existing is None and any(obj["kind"] == "StatefulSet" for obj in desired.objects):
        events.append(Event(EventType.NORMAL, Reason.CREATED, f"created {spec.workers} workers"))
    if desired.scaled_from is not None:
        events.append(
            Event(
                EventType.NORMAL,
                Reason.SCALED,
                f"workers {desired.scaled_from} -> {desired.replicas}",
            )
        )
    if desired.rolled:
        events.append(
            Event(EventType.NORMAL, Reason.ROLLED, f"spec changed: rolling the workers ({reason})")
        )
    for problem in desired.problems:
        if problem.reason == Reason.UNSAFE_SYSCTLS:
            events.append(Event(EventType.WARNING, problem.reason, problem.message))
    return events


def _invalid_spec(
    cluster: ClusterRef, status: Any, error: ValidationError
) -> tuple[dict[str, Any], list[Event]]:
    message = "; ".join(
        f"spec.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        for item in error.errors()
    )
    message = message[:CONDITION_MESSAGE_MAX]
    current = [
        condition(kind, True, Reason.INVALID_SPEC, message, cluster.generation)
        for kind in (ConditionType.DEGRADED, ConditionType.FAILED)
    ]
    merged = merge_conditions(status.conditions, current, isoformat(datetime.now(UTC)))
    failed = CompressionClusterStatus(
        observed_generation=cluster.generation, phase=Phase.FAILED, conditions=merged
    )
    return status_patch(failed), [Event(EventType.WARNING, Reason.INVALID_SPEC, message)]
