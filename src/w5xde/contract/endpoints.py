"""Ports, paths and environment names shared by the worker, its pod and the operator."""

from __future__ import annotations

#: The worker's HTTP port: `/metrics`, `/healthz`, `/readyz` and the report.
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
#: Where the operator pulls a worker's report (HMAC-authenticated, see `auth`).
REPORT_PATH = "/report"
#: Query parameter of the report request: the cluster's current `spec.workers`, so a
#: scale change reaches running workers on the same channel as the report.
WORKERS_PARAMETER = "workers"

ENV_CONFIG = "W5XDE_CONFIG"
ENV_NAME = "W5XDE_NAME"
ENV_NODE_NAME = "W5XDE_NODE_NAME"
ENV_LOG_MODE = "W5XDE_LOG_MODE"
ENV_CLUSTER_KEY = "W5XDE_CLUSTER_KEY"
ENV_CLUSTER_KEY_FILE = "W5XDE_CLUSTER_KEY_FILE"
