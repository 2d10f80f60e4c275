"""Raise the node-wide socket buffer caps, then label the node as tuned.

net.core.rmem_max / wmem_max cap every SO_RCVBUF / SO_SNDBUF on the node and
exist only in the host's network namespace, so no worker pod can raise them.
This runs in the chart's privileged, host-network DaemonSet. It only ever
raises a value (a node an admin tuned higher stays as it is), reads it back,
and only then labels the node, so a label always means the caps are in place.
It keeps checking, because anything on the node may lower them again.

Standard library only, so any image with python3 can run it (the chart uses
the operator image).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

SYSCTL_ROOT = Path("/proc/sys")
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def log(message: str) -> None:
    print(f"w5xde-node-tuning: {message}", flush=True)


def sysctl_path(name: str) -> Path:
    return SYSCTL_ROOT / name.replace(".", "/")


def raise_sysctl(name: str, minimum: int) -> int:
    """Set `name` to at least `minimum`; returns the value the kernel reports afterwards."""
    path = sysctl_path(name)
    current = int(path.read_text().split()[0])
    if current < minimum:
        path.write_text(f"{minimum}\n")
        current = int(path.read_text().split()[0])
        log(f"{name} raised to {current}")
    if current < minimum:
        raise RuntimeError(f"{name} is {current} after writing {minimum}")
    return current


def label_node(node: str, label: str) -> None:
    """Merge-patch the label onto the node through the API server, as the pod's ServiceAccount."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    token = (SERVICE_ACCOUNT / "token").read_text().strip()
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    body = json.dumps({"metadata": {"labels": {label: "true"}}}).encode()
    request = urllib.request.Request(
        f"https://{host}:{port}/api/v1/nodes/{node}",
        data=body,
        method="PATCH",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310 - https to the in-cluster API server
        labels = json.load(response)["metadata"].get("labels", {})
    if labels.get(label) != "true":
        raise RuntimeError(f"node {node} does not carry {label}=true after the patch")


def stop(signum: int, _frame: FrameType | None) -> None:
    # As PID 1 the process ignores SIGTERM unless it handles it.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, stop)
    node = os.environ["NODE_NAME"]
    label = os.environ["NODE_LABEL"]
    interval = float(os.environ.get("INTERVAL_SECONDS", "60"))
    wanted = {
        "net.core.rmem_max": int(os.environ["RMEM_MAX"]),
        "net.core.wmem_max": int(os.environ["WMEM_MAX"]),
    }
    announced = False
    while True:
        try:
            values = {name: raise_sysctl(name, value) for name, value in wanted.items()}
            # Re-labelled every round: a label someone removed comes back.
            label_node(node, label)
            if not announced:
                log(f"node {node} labelled {label}=true ({values})")
                announced = True
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            # Logged and retried: a transient API or /proc error must not crash-loop the pod.
            log(f"not tuned yet: {error}")
            announced = False
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
