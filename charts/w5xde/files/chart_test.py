"""`helm test`: the operator answers on its metrics Service and the CRD is served.

Standard library only (runs on the operator image's python3, like tune_node.py).
Environment: METRICS_URL (the operator's metrics Service), CRD_GROUP_VERSION
(e.g. w5xde.io/v1alpha1), CRD_PLURAL. Exits non-zero with the reason on failure.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def operator_answers(url: str) -> None:
    if not url.startswith("http://"):
        fail(f"METRICS_URL must be http://...: {url}")
    last = ""
    for _ in range(30):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (http only)
                body = answer.read().decode()
            if 'w5xde_build_info{component="operator"' in body:
                print(f"ok: {url} serves w5xde_build_info for the operator")
                return
            last = "no w5xde_build_info{component=operator} in the answer"
        except OSError as error:
            last = str(error)
        time.sleep(2)
    fail(f"the operator does not answer on {url}: {last}")


def crd_served(group_version: str, plural: str) -> None:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    with open(f"{ACCOUNT}/token") as token_file:
        token = token_file.read().strip()
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    request = urllib.request.Request(
        f"https://{host}:{port}/apis/{group_version}",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
            resources = json.loads(answer.read())["resources"]
    except OSError as error:
        fail(f"the API server does not serve {group_version}: {error}")
    if plural not in {resource["name"] for resource in resources}:
        fail(f"{group_version} is served without {plural}")
    print(f"ok: the API server serves {plural}.{group_version}")


def main() -> None:
    operator_answers(os.environ["METRICS_URL"])
    crd_served(os.environ["CRD_GROUP_VERSION"], os.environ["CRD_PLURAL"])


if __name__ == "__main__":
    main()
