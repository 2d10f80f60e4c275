"""The operator's own Prometheus metrics: is it reconciling, how often, how slowly, failing?"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from w5xde.contract import telemetry

#: `w5xde_operator_*`, `w5xde_build_info{component="operator"}`, `process_*`, `python_info`.
REGISTRY = telemetry.standard_registry("operator")

RECONCILES = Counter(
    "w5xde_operator_reconciles_total",
    "Reconciliations of CompressionClusters into their owned objects.",
    ["reason"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "w5xde_operator_errors_total",
    "Reconciliations or status folds that failed (retried by kopf).",
    ["stage"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "w5xde_operator_reconcile_duration_seconds",
    "Wall time of one reconciliation, API calls included.",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FOLDS = Counter(
    "w5xde_operator_status_folds_total",
    "Status folds of worker reports into the top-level figures.",
    registry=REGISTRY,
)
FOLD_SECONDS = Histogram(
    "w5xde_operator_fold_duration_seconds",
    "Wall time of one cluster's fold: pulling every report, folding, writing the status.",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FOLD_LAG_SECONDS = Histogram(
    "w5xde_operator_fold_lag_seconds",
    "Age of the oldest report in a status write, when the write lands.",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
REPORTS = Counter(
    "w5xde_operator_reports_total",
    "Worker reports pulled, by result (ok, failed).",
    ["result"],
    registry=REGISTRY,
)
CERTIFICATES = Counter(
    "w5xde_operator_certificates_total",
    "Worker certificate requests handled, by result (issued, refused, unreachable, rejected).",
    ["result"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "w5xde_operator_events_total",
    "Kubernetes Events posted for users, by reason.",
    ["reason"],
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics from a daemon thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
