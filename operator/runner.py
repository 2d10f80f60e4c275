"""Starts the operator: credentials, server facts, peering, logging, then `kopf.run`."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from w5xde.api.v1alpha1 import LogMode

if TYPE_CHECKING:
    import kopf
    from kubernetes.client import ApiClient

    from w5xde.operator.resources.network_policy import NetworkPolicyOptions

logger = logging.getLogger("w5xde.operator")

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
LOG_LEVELS = {LogMode.SILENT: logging.ERROR, LogMode.NORMAL: logging.WARNING}


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...]
    log_mode: LogMode
    liveness_port: int
    metrics_port: int
    peering: str | None
    priority: int | None
    worker_image: str
    allowed_unsafe_sysctls: tuple[str, ...]
    report_concurrency: int = 64
    #: None: no worker NetworkPolicies (`--no-network-policy`).
    network_policy: NetworkPolicyOptions | None = None


def configure_logging(mode: LogMode) -> None:
    """silent: errors only; normal: warnings; verbose: kopf's and our INFO lines."""
    import kopf

    kopf.configure(verbose=mode is LogMode.VERBOSE)
    level = LOG_LEVELS.get(mode, logging.INFO)
    logging.getLogger().setLevel(level)
    for name in ("kopf", "w5xde", "aiohttp"):
        logging.getLogger(name).setLevel(level)


def load_credentials() -> ApiClient:
    """An API client from in-cluster credentials, else from KUBECONFIG."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def prepare_peering(api_client: ApiClient, name: str, namespaces: tuple[str, ...]) -> bool:
    """Make sure the peering object exists; False when the peering CRDs are not installed.

    kopf never creates the object itself, and without it every replica would act.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api_client)
    clusterwide = not namespaces
    plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    kind = "ClusterKopfPeering" if clusterwide else "KopfPeering"
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        extensions.read_custom_resource_definition(f"{plural}.{PEERING_GROUP}")
    except ApiException as error:
        if error.status == 404:
            return False
        if error.status != 403:
            raise
        # Not allowed to read CRDs: assume the chart installed them.
    body = {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": kind,
        "metadata": {"name": name},
    }
    try:
        if clusterwide:
            custom.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, plural, body)
        else:
            for namespace in namespaces:
                try:
                    custom.create_namespaced_custom_object(
                        PEERING_GROUP, PEERING_VERSION, namespace, plural, body
                    )
                except ApiException as error:
                    if error.status != 409:
                        raise
    except ApiException as error:
        if error.status not in (409, 403):
            raise
    return True


def _kopf_settings() -> kopf.OperatorSettings:
    import kopf

    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="w5xde.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="w5xde.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events are posted explicitly, for users
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    return settings


def run_operator(options: OperatorOptions) -> int:
    import kopf

    from w5xde.operator import metrics
    from w5xde.operator.apply import Runtime
    from w5xde.operator.fold_loop import FoldLoop
    from w5xde.operator.handlers import register
    from w5xde.operator.kube import Kube
    from w5xde.operator.peering_gate import PeeringGate
    from w5xde.operator.reconcile import OperatorContext
    from w5xde.operator.report_client import ReportClient
    from w5xde.operator.sysctl_policy import parse_server_version

    configure_logging(options.log_mode)
    api_client = load_credentials()
    kube = Kube(api_client)
    server = parse_server_version(*kube.server_version())
    context = OperatorContext(
        default_image=options.worker_image,
        server_version=server,
        allowed_unsafe_sysctls=options.allowed_unsafe_sysctls,
        network_policy=options.network_policy,
    )
    if options.network_policy is not None and not options.network_policy.operator_namespace:
        logger.warning(
            "worker NetworkPolicies admit no operator pod to the report port: the operator's"
            " namespace is unknown (--operator-namespace or $W5XDE_OPERATOR_NAMESPACE)"
        )
    runtime = Runtime(kube=kube, context=context)
    settings = _kopf_settings()

    peering_name = None
    standalone = True
    if options.peering is not None:
        if prepare_peering(api_client, options.peering, options.namespaces):
            peering_name, standalone = options.peering, False
        else:
            logger.warning("kopf peering CRDs are not installed: running standalone")
    priority = options.priority if options.priority is not None else random.randint(1, 10**6)  # noqa: S311
    # kopf's own convention: the pod's name (POD_ID, set by the chart) names the peer.
    identity = os.environ.get("POD_ID") or (
        f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
    )
    read_peers = None
    if peering_name is not None:
        scope = options.namespaces[0] if options.namespaces else None
        name = peering_name

        def read_peers() -> dict[str, object]:
            return kube.read_peering_status(name, scope)

    gate = PeeringGate(read_peers, identity, priority)
    fold_loop = FoldLoop(runtime, gate, ReportClient(concurrency=options.report_concurrency))
    registry = kopf.OperatorRegistry()
    register(registry, runtime, fold_loop)

    if options.metrics_port:
        metrics.serve(options.metrics_port)
    liveness = f"http://0.0.0.0:{options.liveness_port}/healthz" if options.liveness_port else None
    logger.warning(
        "w5xde operator: server %d.%d, %s, peering %s",
        *server,
        f"namespaces {', '.join(options.namespaces)}" if options.namespaces else "all namespaces",
        peering_name or "off (standalone)",
    )
    kopf.run(
        registry=registry,
        settings=settings,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        standalone=standalone,
        peering_name=peering_name,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=liveness,
    )
    return 0
