"""Fixtures for the API/operator tests on the real test bed: the CRD and an operator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

ROOT = Path(__file__).parents[2]
CRD_FILE = ROOT / "crds" / "compressioncluster.yaml"
W5XDE = str(Path(sys.executable).with_name("w5xde"))
#: The node agent runs any image whose name contains "w5xde" as the venv's `w5xde`.
WORKER_IMAGE = "localhost/w5xde-worker:testbed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CRD_NAME = "compressionclusters.w5xde.io"


@pytest.fixture(scope="module")
def crd(testbed: Any) -> Iterator[str]:
    """The generated CRD, applied as users would; removed again if this module added it,
    so a later `helm install` (which cannot adopt a CRD it did not create) still works."""
    testbed.wait_for(lambda: not _crd_terminating(testbed), 90, "an earlier CRD deletion to finish")
    existed = testbed.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0
    if not existed:
        testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    testbed.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    yield CRD_NAME
    if not existed and not _clusters_of_others(testbed):
        release_orphans(testbed)
        testbed.kubectl("delete", "crd", CRD_NAME, "--wait=true", "--timeout=50s", check=False)


def _crd_terminating(testbed: Any) -> bool:
    result = testbed.kubectl("get", "crd", CRD_NAME, "-o", "json", check=False)
    return result.returncode == 0 and bool(
        json.loads(result.stdout)["metadata"].get("deletionTimestamp")
    )


def _clusters_of_others(testbed: Any) -> list[str]:
    """Clusters outside namespaces being deleted: someone else (sharing the bed) uses the
    CRD, so it stays."""
    clusters = testbed.kubectl("get", "cc", "-A", "-o", "json", check=False)
    namespaces = testbed.kubectl("get", "namespaces", "-o", "json", check=False)
    if clusters.returncode != 0 or namespaces.returncode != 0:
        return []
    live = {
        item["metadata"]["name"]
        for item in json.loads(namespaces.stdout)["items"]
        if not item["metadata"].get("deletionTimestamp")
    }
    return [
        f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        for item in json.loads(clusters.stdout)["items"]
        if item["metadata"]["namespace"] in live
    ]


def release_orphans(testbed: Any) -> None:
    """Drop the finalizers of clusters already being deleted in test namespaces.

    kopf's timers finalize every cluster an operator has seen; one watching all
    namespaces (another suite's) may have tagged ours and gone away since.
    """
    listed = testbed.kubectl("get", "cc", "-A", "-o", "json", check=False)
    if listed.returncode != 0:
        return
    for item in json.loads(listed.stdout).get("items", []):
        meta = item["metadata"]
        if meta.get("deletionTimestamp") and meta["namespace"].startswith("t-"):
            testbed.kubectl(
                "patch", "cc", meta["name"], "-n", meta["namespace"], "--type=merge",
                "-p", '{"metadata": {"finalizers": null}}', check=False,
            )  # fmt: skip


class OperatorProcess:
    """`w5xde operator` as a subprocess, namespace-scoped, logging to a file."""

    def __init__(self, testbed: Any, namespace: str, log_dir: Path, *extra: str) -> None:
        self.testbed = testbed
        self.namespace = namespace
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_dir / f"operator-{namespace}-{time.monotonic_ns()}.log"
        env = dict(os.environ, KUBECONFIG=str(testbed.kubeconfig))
        env.pop("W5XDE_WORKER_IMAGE", None)
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                W5XDE, "operator", "--namespace", namespace, "--standalone",
                "--log-mode", "verbose", "--liveness", str(self.liveness_port),
                "--metrics-port", str(self.metrics_port), "--worker-image", WORKER_IMAGE,
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        testbed.wait_for(self.healthy, 60, f"operator liveness on :{self.liveness_port}")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"operator exited {self.process.returncode}:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.liveness_port), timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_operator(
    testbed: Any, namespace: str, crd: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(*extra: str) -> OperatorProcess:
        process = OperatorProcess(testbed, namespace, tmp_path, *extra)
        started.append(process)
        return process

    yield start
    # kopf's timers put a finalizer on every cluster: delete them while an operator runs.
    testbed.kubectl(
        "delete", "cc", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False
    )
    for process in started:
        process.stop()


@pytest.fixture
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator()


def get_json(testbed: Any, *args: str) -> dict[str, Any]:
    result = testbed.kubectl("get", *args, "-o", "json")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def apply_cluster(testbed: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    manifest = {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": name, "namespace": namespace},
        # An explicit image: another operator watching every namespace of the shared
        # test bed (the chart's tests install one) then renders the very same objects.
        "spec": {"image": WORKER_IMAGE, **spec},
    }
    testbed.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def token_client(testbed: Any, namespace: str, account: str) -> client.ApiClient:
    """An API client that acts as `account` (a token minted for it), not as the admin."""
    token = testbed.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = testbed.api_client().configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)
