"""`w5xde operator` (run the kopf operator) and `w5xde crd` (write the generated CRD)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from w5xde.api.v1alpha1 import LogMode, parse_log_mode
from w5xde.contract import telemetry

EXIT_USAGE = 2
ENV_WORKER_IMAGE = "W5XDE_WORKER_IMAGE"
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
    from w5xde.operator.runner import OperatorOptions, run_operator

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
    )
    return run_operator(options)
