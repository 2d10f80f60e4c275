"""pytest fixtures: `testbed` (the running control plane and its nodes) and `namespace`.

The cluster starts once per session, or a running one is joined: sessions
register as users and the last one out takes it down; one started with `make
cluster-up` stays until `make cluster-down`. Failures carry the tail of the
logs, because a test bed failure is rarely explained by the assertion alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from testbed import controlplane, nodes
from testbed.paths import ADMIN_KUBECONFIG, BIN_DIR, NODES_DIR

T = TypeVar("T")


class Testbed:
    """What tests get: the admin kubeconfig, the binaries, and helpers that fail loudly."""

    __test__ = False

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.plane = plane
        self.kubeconfig: Path = ADMIN_KUBECONFIG
        self.bin_dir: Path = BIN_DIR

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        env.setdefault("HELM_CACHE_HOME", str(self.kubeconfig.parent / "helm-cache"))
        env.setdefault("HELM_CONFIG_HOME", str(self.kubeconfig.parent / "helm-config"))
        env.setdefault("HELM_DATA_HOME", str(self.kubeconfig.parent / "helm-data"))
        return env

    def _run(
        self, tool: str, args: tuple[str, ...], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / tool), *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"{tool} {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
                pytrace=False,
            )
        return result

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, check, input, timeout)

    def helm(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, check, input, timeout)

    def server_version(self) -> str:
        """The API server's gitVersion, e.g. v1.37.2 (for `helm template --kube-version`)."""
        version = json.loads(self.kubectl("version", "-o", "json").stdout)
        return str(version["serverVersion"]["gitVersion"])

    def api_client(self):  # type: ignore[no-untyped-def]  # kubernetes has no type hints
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    def logs_tail(self, lines: int = 40) -> str:
        """The tail of every component log and of every container log on the nodes."""
        chunks = [controlplane.tail(lines)]
        for log in sorted(NODES_DIR.glob("*/logs/*/*/*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {log} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(chunks)

    def pod_log(
        self, namespace: str, pod: str, container: str | None = None, previous: bool = False
    ) -> str:
        """`kubectl logs` of a container ("" when the pod or its log is not there yet)."""
        args = ["logs", pod, "-n", namespace]
        if container is not None:
            args += ["-c", container]
        if previous:
            args.append("--previous")
        result = self.kubectl(*args, check=False)
        return result.stdout if result.returncode == 0 else ""

    def container_pid(self, namespace: str, pod: str, container: str | None = None) -> int:
        """The host pid of a container's main process (from its node's containerd)."""
        body = json.loads(self.kubectl("get", "pod", pod, "-n", namespace, "-o", "json").stdout)
        statuses = body.get("status", {}).get("containerStatuses") or []
        for status in statuses:
            if container is None or status["name"] == container:
                container_id = str(status.get("containerID", ""))
                if not container_id.startswith("containerd://"):
                    raise LookupError(f"{namespace}/{pod} has no running container yet")
                node = nodes.node_named(body["spec"]["nodeName"])
                return nodes.container_pid(node, container_id.removeprefix("containerd://"))
        raise LookupError(f"{namespace}/{pod} has no container {container}")

    def wait_for(
        self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5
    ) -> T:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as error:  # a transient API error must not end the wait
                last_error = error
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        detail = f" (last error: {last_error!r})" if last_error else ""
        pytest.fail(
            f"timed out after {timeout:.0f}s waiting for {what}{detail}\n{self.logs_tail()}",
            pytrace=False,
        )


@contextlib.contextmanager
def _test_timeout_paused() -> Iterator[None]:
    """pytest-timeout (signal method) arms SIGALRM for each test, fixtures included;
    waiting for another work tree's bed may take longer than any one test may, so that
    wait (bounded by `controlplane.OTHER_TREE_WAIT_SECONDS`) does not count."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    remaining, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if remaining:
            signal.setitimer(signal.ITIMER_REAL, remaining, interval)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (kubelet, containerd, network namespaces)")
    missing = controlplane.missing_tools()
    if missing:
        pytest.fail("the test bed cannot start:\n  " + "\n  ".join(missing), pytrace=False)
    try:
        with _test_timeout_paused():
            plane = controlplane.acquire()
    except controlplane.ControlPlaneError as error:
        pytest.fail(f"test bed did not start: {error}", pytrace=False)
    supervisor = controlplane.Supervisor()
    supervisor.start()
    try:
        yield Testbed(plane)
    finally:
        supervisor.stop()
        controlplane.release()


@pytest.fixture
def namespace(testbed: Testbed) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    testbed.kubectl("create", "namespace", name)
    testbed.wait_for(
        lambda: (
            testbed.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
            == 0
        ),
        30,
        f"the default service account in {name}",
    )
    try:
        yield name
    finally:
        testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)
