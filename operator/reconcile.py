"""The desired state of one cluster: every owned object, and what keeps it from running.

Pure; `handlers.py` applies the result.  Both the change handlers and the fold loop
call `spec_problems`, so a Degraded reason derived from the spec never flaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec, NetworkPath
from w5xde.operator.observation import Problem, Reason
from w5xde.operator.resources.metadata import (
    TEMPLATE_HASH_ANNOTATION,
    TEMPLATE_WORKERS_ANNOTATION,
    ClusterRef,
)
from w5xde.operator.resources.network_policy import NetworkPolicyOptions, render_network_policy
from w5xde.operator.resources.run_config import render_run_config
from w5xde.operator.resources.secret import render_secret
from w5xde.operator.resources.service import render_service, render_worker_service
from w5xde.operator.resources.service_account import render_service_account
from w5xde.operator.resources.statefulset import pod_template_hash, render_statefulset
from w5xde.operator.sysctl_policy import SysctlPlan, plan_sysctls


@dataclass(frozen=True)
class OperatorContext:
    """What the operator knows besides the spec: its defaults and the server it runs on."""

    default_image: str
    server_version: tuple[int, int]
    allowed_unsafe_sysctls: tuple[str, ...] = ()
    #: None: the operator renders no NetworkPolicy (and removes one it made earlier).
    network_policy: NetworkPolicyOptions | None = None


@dataclass(frozen=True)
class Desired:
    objects: tuple[dict[str, Any], ...]  # applied on every reconcile (server-side apply)
    secret: dict[str, Any]  # created once, never overwritten
    problems: tuple[Problem, ...] = ()
    fatal: Problem | None = None
    template_hash: str = ""
    rolled: bool = False  # the pod template differs from the running one
    scaled_from: int | None = None  # the StatefulSet had another replica count
    replicas: int = 0
    #: (kind, name) of objects the cluster must not own now: removed if it owns them.
    absent: tuple[tuple[str, str], ...] = ()
    #: The run ConfigMap, cleared, when pods of a new template are about to start (a
    #: new run): applied before the StatefulSet.  None when the template is unchanged
    #: (a scale keeps the run and its deadline).
    run_config: dict[str, Any] | None = None


def image_for(spec: CompressionClusterSpec, context: OperatorContext) -> str:
    return spec.image or context.default_image


def sysctl_plan(spec: CompressionClusterSpec, context: OperatorContext) -> SysctlPlan:
    return plan_sysctls(spec.network, context.server_version, context.allowed_unsafe_sysctls)


def spec_problems(
    spec: CompressionClusterSpec, context: OperatorContext
) -> tuple[tuple[Problem, ...], Problem | None]:
    """(Degraded reasons, fatal reason) that follow from the spec alone."""
    plan = sysctl_plan(spec, context)
    problems: list[Problem] = []
    if plan.refused:
        problems.append(
            Problem(
                Reason.UNSAFE_SYSCTLS,
                f"network.sysctls: {', '.join(plan.refused)} not in the kubelet's safe set for"
                f" Kubernetes {context.server_version[0]}.{context.server_version[1]};"
                " the workers were not (re)started with them",
            )
        )
    if plan.omitted:
        problems.append(
            Problem(
                Reason.SOCKET_SYSCTLS_OMITTED,
                f"{', '.join(plan.omitted)} left out: safe only from Kubernetes 1.32, the server"
                f" is {context.server_version[0]}.{context.server_version[1]}",
            )
        )
    if not spec.security.tls:
        problems.append(
            Problem(
                Reason.TLS_DISABLED,
                "security.tls is false: the data plane is neither encrypted nor authenticated"
                " after connect, and a worker's name is what it says",
            )
        )
    fatal = None
    if not image_for(spec, context):
        fatal = Problem(
            Reason.NO_WORKER_IMAGE,
            "spec.image is empty and the operator has no default worker image",
        )
    return tuple(problems), fatal


def desired_state(
    cluster: ClusterRef,
    spec: CompressionClusterSpec,
    context: OperatorContext,
    *,
    existing_statefulset: Mapping[str, Any] | None,
    cluster_key: str,
    completed: bool = False,
) -> Desired:
    """Everything the cluster should own now.  A run that completed keeps zero replicas."""
    problems, fatal = spec_problems(spec, context)
    plan = sysctl_plan(spec, context)
    image = image_for(spec, context)
    objects: list[dict[str, Any]] = [
        render_service_account(cluster),
        render_service(cluster, spec),
    ]
    absent: list[tuple[str, str]] = []
    if spec.network.path is NetworkPath.SERVICE:
        # One ClusterIP Service per worker; a scale-down removes the ones beyond it
        # (the path itself is immutable, so no switch leaves a set behind).
        objects += [render_worker_service(cluster, spec, index) for index in range(spec.workers)]
        running = _replicas(existing_statefulset) or 0
        absent += [("Service", cluster.worker_service(i)) for i in range(spec.workers, running)]
    if context.network_policy is not None:
        # Before the StatefulSet: no worker ever starts unprotected.
        objects.append(render_network_policy(cluster, spec, context.network_policy))
    else:
        absent.append(("NetworkPolicy", cluster.network_policy))
    existing_annotations = _annotations(existing_statefulset)
    template_hash = pod_template_hash(cluster, spec, image=image, sysctls=plan)
    running_hash = existing_annotations.get(TEMPLATE_HASH_ANNOTATION)
    template_workers = spec.workers
    if running_hash == template_hash:
        template_workers = int(existing_annotations.get(TEMPLATE_WORKERS_ANNOTATION, spec.workers))
    replicas = 0 if completed else spec.workers
    refused = bool(plan.refused)
    if fatal is None and not refused:
        objects.append(
            render_statefulset(
                cluster,
                spec,
                image=image,
                sysctls=plan,
                replicas=replicas,
                template_workers=template_workers,
                template_hash=template_hash,  # rendered once above: the template twice in all
            )
        )
    existing_replicas = _replicas(existing_statefulset)
    applies_statefulset = fatal is None and not refused
    new_template = applies_statefulset and running_hash != template_hash
    return Desired(
        run_config=render_run_config(cluster, None) if new_template else None,
        objects=tuple(objects),
        secret=render_secret(cluster, cluster_key),
        problems=problems,
        fatal=fatal,
        template_hash=template_hash,
        rolled=applies_statefulset and running_hash is not None and running_hash != template_hash,
        scaled_from=(
            existing_replicas
            if applies_statefulset
            and existing_replicas is not None
            and existing_replicas != replicas
            else None
        ),
        replicas=replicas,
        absent=tuple(absent),
    )


def _annotations(obj: Mapping[str, Any] | None) -> dict[str, str]:
    if not obj:
        return {}
    return dict(obj.get("metadata", {}).get("annotations") or {})


def _replicas(obj: Mapping[str, Any] | None) -> int | None:
    if not obj:
        return None
    value = obj.get("spec", {}).get("replicas")
    return int(value) if value is not None else None
