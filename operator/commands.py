"""`w5xde operator` (run the kopf operator) and `w5xde crd` (write the generated CRD)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from w5xde.api.v1alpha1 import LogMode, parse_log_mode
from w5xde.contract import telemetry

EXIT_USAGE = 2
ENV_WORKER_IMAGE = "W5XDE_WORKER_IMAGE"
#: The operator's own namespace, from the downward API (the chart sets the first;
#: POD_NAMESPACE is the usual name elsewhere).
ENV_OPERATOR_NAMESPACE = ("W5XDE_OPERATOR_NAMESPACE", "POD_NAMESPACE")
DEFAULT_PEERING = "w5xde"


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the operator's subcommands."""
    operator = subparsers.add_parser(
        "operator",
        help="run the operator that turns CompressionClusters into worker pods",
        description="Run the kopf operator. Credentials: in-cluster, else KUBECONFIG.",
    )
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); the default is the whole cluster",
    )
    scope.add_argument(
        "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    operator.add_argument(
        "--log-mode",
        default=os.environ.get("W5XDE_LOG_MODE", "normal"),
        help="silent | normal | verbose (or 1 | 2 | 3); default normal or $W5XDE_LOG_MODE",
    )
    operator.add_argument(
        "--liveness",
        type=int,
        default=telemetry.OPERATOR_HEALTH_PORT,
        metavar="PORT",
        help="/healthz port (0: off)",
    )
    operator.add_argument(
        "--metrics-port",
        type=int,
        default=telemetry.OPERATOR_METRICS_PORT,
        metavar="PORT",
        help="/metrics port (0: off)",
    )
    operator.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        metavar="NAME",
        help="kopf peering object shared by the replicas (created if the peering CRDs exist)",
    )
    operator.add_argument(
        "--standalone", action="store_true", help="no peering: only run one replica"
    )
    operator.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; replicas need distinct ones (default: random)",
    )
    operator.add_argument(
        "--worker-image",
        default=os.environ.get(ENV_WORKER_IMAGE, ""),
        metavar="IMAGE",
        help=f"default worker image when spec.image is empty (${ENV_WORKER_IMAGE})",
    )
    operator.add_argument(
        "--allowed-unsafe-sysctls",
        default="",
        metavar="PATTERNS",
        help="comma-separated sysctl patterns the kubelets allow beyond the safe set",
    )
    operator.add_argument(
        "--report-concurrency",
        type=int,
        default=64,
        metavar="N",
        help="worker reports pulled at once, over all clusters (default 64)",
    )
    policy = operator.add_argument_group(
        "worker NetworkPolicy",
        "one NetworkPolicy per cluster: its data port admits only the cluster's own pods,"
        " its metrics/report port only the operator and the monitoring namespaces",
    )
    policy.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="render the workers' NetworkPolicy (default on); off removes the ones it made",
    )
    policy.add_argument(
        "--operator-namespace",
        default=next(
            (os.environ[name] for name in ENV_OPERATOR_NAMESPACE if os.environ.get(name)), ""
        ),
        metavar="NS",
        help="namespace of the operator's pods, admitted to the workers' report port"
        f" (default ${' or $'.join(ENV_OPERATOR_NAMESPACE)}; empty: no operator pod is admitted)",
    )
    policy.add_argument(
        "--operator-pod-labels",
        default="",
        metavar="K=V,...",
        help="labels of the operator's pods in that namespace (empty: every pod there)",
    )
    policy.add_argument(
        "--monitoring-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace whose pods may scrape the workers' metrics port (repeatable)",
    )
    operator.set_defaults(handler=run_operator_command)

    crd = subparsers.add_parser(
        "crd",
        help="write the CompressionCluster CRD generated from the API models",
        description="Write crds/compressioncluster.yaml and the chart's copy.",
    )
    crd.add_argument("--root", default=".", help="repository root (default: .)")
    crd.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if a file is out of date"
    )
    crd.add_argument("--stdout", action="store_true", help="print the CRD instead of writing")
    crd.set_defaults(handler=run_crd_command)


def run_crd_command(args: argparse.Namespace) -> int:
    from w5xde.api.crd import crd_yaml, generated_files

    if args.stdout:
        sys.stdout.write(crd_yaml())
        return 0
    root = Path(args.root)
    stale = []
    for relative, text in generated_files().items():
        path = root / relative
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(relative))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run `w5xde crd`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def run_operator_command(args: argparse.Namespace) -> int:
    try:
        log_mode = LogMode(str(parse_log_mode(args.log_mode)))
    except ValueError:
        print(
            f"w5xde operator: --log-mode: {args.log_mode!r} is not silent, normal, verbose,"
            " 1, 2 or 3",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not 1 <= args.report_concurrency <= 4096:
        print("w5xde operator: --report-concurrency must be in 1..4096", file=sys.stderr)
        return EXIT_USAGE
    for name, port in (("--liveness", args.liveness), ("--metrics-port", args.metrics_port)):
        if not 0 <= port <= 65535:
            print(f"w5xde operator: {name} must be a port in 0..65535", file=sys.stderr)
            return EXIT_USAGE
    try:
        operator_pod_labels = parse_labels(args.operator_pod_labels)
    except ValueError as error:
        print(f"w5xde operator: --operator-pod-labels: {error}", file=sys.stderr)
        return EXIT_USAGE
    namespaces = (
        [("--operator-namespace", args.operator_namespace)] if args.operator_namespace else []
    )
    namespaces += [("--monitoring-namespace", name) for name in args.monitoring_namespace]
    for option, name in namespaces:
        problem = namespace_problem(name)
        if problem:
            print(f"w5xde operator: {option}: {problem}", file=sys.stderr)
            return EXIT_USAGE
    from w5xde.operator.resources.network_policy import NetworkPolicyOptions
    from w5xde.operator.runner import OperatorOptions, run_operator

    network_policy = None
    if args.network_policy:
        network_policy = NetworkPolicyOptions(
            operator_namespace=args.operator_namespace,
            operator_pod_labels=operator_pod_labels,
            monitoring_namespaces=tuple(args.monitoring_namespace),
        )
    options = OperatorOptions(
        namespaces=tuple(args.namespace),
        log_mode=log_mode,
        liveness_port=args.liveness,
        metrics_port=args.metrics_port,
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        worker_image=args.worker_image,
        allowed_unsafe_sysctls=tuple(
            pattern.strip() for pattern in args.allowed_unsafe_sysctls.split(",") if pattern.strip()
        ),
        report_concurrency=args.report_concurrency,
        network_policy=network_policy,
    )
    import logging

    from w5xde import kube_errors

    if log_mode is not LogMode.VERBOSE:
        # The kubernetes client's retry warnings would precede the one line below.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        return run_operator(options)
    except Exception as error:
        # Start-up failures a user fixes (no kubeconfig, server unreachable, TLS, expired
        # credentials) are one line; anything else is a bug and keeps its traceback.
        message = kube_errors.describe(error, kube_errors.api_server(), kube_errors.OPERATOR_HINTS)
        if message is None:
            raise
        print(f"w5xde operator: {message}", file=sys.stderr)
        return 1


#: Kubernetes' own syntax for label values, the name part of label keys, and namespaces.
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as a dict; ValueError naming the item the API server would refuse."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        prefix, slash, name = key.rpartition("/")
        valid = (
            bool(sep and name)
            and _fits(_LABEL_VALUE, name, 63)
            and (not slash or _fits(_DNS_SUBDOMAIN, prefix, 253))
            and _fits(_LABEL_VALUE, value, 63)
        )
        if not valid:
            raise ValueError(f"{item!r} is not a Kubernetes label key=value")
        labels[key] = value
    return labels


def namespace_problem(name: str) -> str | None:
    if _fits(_DNS_LABEL, name, 63):
        return None
    return f"{name!r} is not a namespace name (RFC 1123 label)"


def _fits(pattern: re.Pattern[str], text: str, limit: int) -> bool:
    return len(text) <= limit and pattern.fullmatch(text) is not None
