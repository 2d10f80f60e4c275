"""Applies what `reconcile.desired_state` renders, and posts the Events users read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from w5xde.api.v1alpha1 import CompressionClusterSpec, CompressionClusterStatus, Phase
from w5xde.operator import metrics
from w5xde.operator.certificate_authority import ensure_authority
from w5xde.operator.key_secret import key_problem
from w5xde.operator.kube import Kube
from w5xde.operator.observation import Event, Problem
from w5xde.operator.reconcile import Desired, OperatorContext, desired_state
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.secret import new_cluster_key

#: Objects an earlier version gave the workers (a Role to patch the status); workers
#: now hold no API permissions at all, so the operator removes them.
RETIRED_WORKER_RBAC = ("RoleBinding", "Role")


@dataclass(frozen=True)
class Runtime:
    kube: Kube
    context: OperatorContext


def desired_for(
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


def apply_desired(
    kube: Kube, desired: Desired, *, with_statefulset: bool = True
) -> dict[str, Any] | None:
    """Apply the objects; the applied StatefulSet as the server returned it, if any."""
    kube.create_if_absent(desired.secret)
    applied = None
    for obj in desired.objects:
        if obj["kind"] == "StatefulSet" and not with_statefulset:
            continue
        if obj["kind"] == "StatefulSet" and desired.run_config is not None:
            kube.apply(desired.run_config)  # new pods read no earlier run's deadline
        result = kube.apply(obj)
        if obj["kind"] == "StatefulSet":
            applied = result
    return applied


def is_completed(status: CompressionClusterStatus, generation: int) -> bool:
    """The bounded run of the current generation is over: its workers stay at zero."""
    return status.phase is Phase.COMPLETED and status.observed_generation >= generation


def keeps_no_workers(status: CompressionClusterStatus, generation: int) -> bool:
    """No worker pods now: the run is over, or a sample set waits for the previous
    sample's workers to go before it starts the next sample's (the fold loop scales
    them up again)."""
    applied = status.observed_generation >= generation
    return is_completed(status, generation) or (applied and status.run.awaiting_fresh_workers)


@dataclass(frozen=True)
class Owned:
    desired: Desired
    #: The StatefulSet as applied (None when it was not: see `problem`).
    statefulset: dict[str, Any] | None
    #: The key or CA Secret of that name is not the cluster's own: no worker is started.
    problem: Problem | None


def ensure_owned(
    runtime: Runtime,
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    existing: Mapping[str, Any] | None,
    *,
    completed: bool,
) -> Owned:
    """Apply every object the cluster should own now; a completed run keeps zero workers.
    The one path for the change handlers, the fold loop's repair and its scale-down."""
    kube = runtime.kube
    desired = desired_for(runtime, cluster, spec, existing, completed=completed)
    kube.create_if_absent(desired.secret)
    problem = key_problem(kube.read_secret(cluster.namespace, cluster.key_secret), cluster)
    if problem is None and spec.security.tls and spec.security.operator_issued:
        # Before the StatefulSet: its pods mount the CA certificate this publishes.
        problem = ensure_authority(kube, cluster)[1]
    statefulset = apply_desired(kube, desired, with_statefulset=problem is None)
    return Owned(desired=desired, statefulset=statefulset, problem=problem)


def remove_retired_worker_rbac(kube: Kube, cluster: ClusterRef) -> None:
    for kind in RETIRED_WORKER_RBAC:
        kube.delete_if_present(kind, cluster.namespace, cluster.worker_account)


def remove_absent(kube: Kube, cluster: ClusterRef, desired: Desired) -> None:
    """Delete what the cluster must not own now (a NetworkPolicy after `--no-network-policy`)."""
    for kind, name in desired.absent:
        kube.delete_if_owned(kind, cluster.namespace, name, cluster.uid)


def post_events(body: Mapping[str, Any], events: Sequence[Event]) -> None:
    for event in events:
        metrics.EVENTS.labels(reason=event.reason).inc()
        # kopf only reads apiVersion, kind and metadata of the object it refers to.
        target: Any = dict(body)
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)
