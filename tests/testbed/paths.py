"""Where the test bed keeps its binaries and state, and the fixed addresses it uses.

One place for these so the launcher, the nodes and the fixtures agree without
passing them around.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
STATE_ROOT = Path(os.environ.get("W5XDE_TESTBED_DIR", REPO_ROOT / ".testbed"))
BIN_DIR = STATE_ROOT / "bin"
CLUSTER_DIR = STATE_ROOT / "cluster"
NODES_DIR = STATE_ROOT / "nodes"
IMAGES_DIR = STATE_ROOT / "images"
#: Sockets and runtime state of the nodes (tmpfs, short paths for unix sockets).
RUN_DIR = Path("/run/w5n")
VENV_BIN = REPO_ROOT / ".venv" / "bin"

#: Every network object the test bed creates starts with this, so cleanup never
#: touches anybody else's namespaces or links.
NAME_PREFIX = "w5n-"
BRIDGE = "w5n-br0"
BRIDGE_IP = "10.244.0.1"
POD_NETWORK_PREFIXLEN = 16
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAMES = ("w5n-node-a", "w5n-node-b")
#: The cluster DNS service (CoreDNS) and the images the nodes get besides the project's.
CLUSTER_DNS_IP = "10.96.0.10"

ADMIN_KUBECONFIG = CLUSTER_DIR / "admin.kubeconfig"
CA_CERT = CLUSTER_DIR / "pki" / "ca.crt"
STATE_FILE = CLUSTER_DIR / "state.json"


def apiserver_url() -> str:
    return f"https://{BRIDGE_IP}:{APISERVER_PORT}"
