"""Ports, paths and environment names shared by the worker, its pod and the operator."""

from __future__ import annotations

#: The worker's HTTP port: `/metrics`, `/healthz`, `/readyz` and the report.
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
#: Where the operator pulls a worker's report (HMAC-authenticated, see `auth`).
REPORT_PATH = "/report"
#: Where the operator tells a worker the cluster's size (`PUT`, HMAC-authenticated, no
#: body): `?workers=N&generation=G`, G the cluster's `metadata.generation`.  Idempotent;
#: a generation older than one the worker has applied is refused (409).
RESIZE_PATH = "/resize"
#: Query parameters of the resize request.
WORKERS_PARAMETER = "workers"
GENERATION_PARAMETER = "generation"
#: Where the operator puts the certificate it signed for the CSR in a worker's report
#: (`PUT`, HMAC-authenticated; the body's SHA-256 is the query parameter `sha256`).
CERTIFICATE_PATH = "/certificate"
#: The body of that PUT is at most this big (a PEM certificate is about 700 bytes).
MAX_CERTIFICATE_BYTES = 8192
#: Where a worker pod finds the cluster CA's certificate (the `NAME-ca` ConfigMap).
TRUST_DIRECTORY = "/var/run/w5xde.io/ca"
TRUST_FILE = "ca.crt"
#: With `security.certificates: certManager`: the pod's own certificate, key and CA,
#: written by cert-manager's CSI driver (its default file names).
CERT_MANAGER_DIRECTORY = "/var/run/w5xde.io/tls-identity"
#: An in-memory volume of the pod (see ENV_TLS_SCRATCH_DIR).
TLS_SCRATCH_DIRECTORY = "/var/run/w5xde.io/tls"
#: An in-memory volume where `ssl` reads a worker's key for an instant (see worker/tls.py).
ENV_TLS_SCRATCH_DIR = "W5XDE_TLS_SCRATCH_DIR"

ENV_CONFIG = "W5XDE_CONFIG"
ENV_NAME = "W5XDE_NAME"
ENV_NODE_NAME = "W5XDE_NODE_NAME"
#: The pod IP (downward API): the metrics and report server binds to it alone.
ENV_POD_IP = "W5XDE_POD_IP"
ENV_LOG_MODE = "W5XDE_LOG_MODE"
ENV_CLUSTER_KEY = "W5XDE_CLUSTER_KEY"
ENV_CLUSTER_KEY_FILE = "W5XDE_CLUSTER_KEY_FILE"
#: A bounded run's deadline (epoch seconds), from the cluster's run ConfigMap.
ENV_RUN_DEADLINE = "W5XDE_RUN_DEADLINE"
#: The run ConfigMap's key holding it ("" until the run has started).
RUN_DEADLINE_FIELD = "deadline"
