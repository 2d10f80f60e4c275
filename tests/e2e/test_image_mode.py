"""The main journey once more, with every pod running from the built images (image mode).

A second node agent, started with `--runtime podman`, serves two more nodes and
runs their pods' containers from `make images`' images with podman, inside the
pods' network namespaces. The nodes are created beforehand with a label and a
taint, so nothing else lands on them (other tests share the control plane) and
the journey places itself there the way a user pins work to a node pool: the
chart's `nodeSelector`/`tolerations` values and the same fields in the example's
spec. Otherwise it is the user's journey: `helm install`, `kubectl apply` of
`examples/cluster.yaml`, and the figures in `kubectl get compressionclusters`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from images.containers import image_ref, podman
from testbed.fixtures import Testbed
from testbed.nodeagent.nodes import node_object
from testbed.nodeagent.podman_runtime import CONTAINER_PREFIX, remove_all_containers
from testbed.paths import ADMIN_KUBECONFIG, CLUSTER_DIR, NODE_NAMES, REPO_ROOT, TESTS_DIR, VENV_BIN
from testbed.printer_columns import assert_running_row

pytestmark = [pytest.mark.testbed, pytest.mark.netns, pytest.mark.images, pytest.mark.slow]

IMAGE_NODES = ("w5n-img-a", "w5n-img-b")
AGENT_LOG = CLUSTER_DIR / "nodeagent-images.log"
# The release and namespace of the process-mode journeys: a CRD kept (`crds.keep`)
# by either is then owned by the release the other installs.
RELEASE = "w5xde"
OPERATOR_NAMESPACE = "w5xde-system"
DEMO_NAMESPACE = "e2e-img"
DEMO = "demo"
CRD = "compressionclusters.w5xde.io"
PLACEMENT_KEY = "w5xde.io/testbed-runtime"
PLACEMENT_VALUE = "podman"
NODE_SELECTOR = {PLACEMENT_KEY: PLACEMENT_VALUE}
TOLERATIONS = [
    {"key": PLACEMENT_KEY, "operator": "Equal", "value": PLACEMENT_VALUE, "effect": "NoSchedule"}
]


def _node_ready(testbed: Testbed, name: str) -> bool:
    result = testbed.kubectl("get", "node", name, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _stop_agent(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def image_nodes(testbed: Testbed) -> Iterator[tuple[str, ...]]:
    """Two tainted nodes whose pods run from the images, served by a second agent."""
    for kind in ("worker", "operator"):
        if podman("image", "exists", image_ref(kind)).returncode != 0:
            pytest.fail(f"image {image_ref(kind)} is missing: run `make images`", pytrace=False)
    remove_all_containers()
    first_index = len(NODE_NAMES)
    nodes = [
        node_object(
            name,
            first_index + i,
            labels=NODE_SELECTOR,
            taints=[{"key": PLACEMENT_KEY, "value": PLACEMENT_VALUE, "effect": "NoSchedule"}],
        )
        for i, name in enumerate(IMAGE_NODES)
    ]
    testbed.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
    )
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR))
    AGENT_LOG.parent.mkdir(parents=True, exist_ok=True)
    with AGENT_LOG.open("ab") as log:
        agent = subprocess.Popen(
            [
                str(VENV_BIN / "python"), "-m", "testbed.nodeagent",
                f"--kubeconfig={ADMIN_KUBECONFIG}", "--runtime=podman",
                f"--first-node-index={first_index}",
                *(f"--node={name}" for name in IMAGE_NODES),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=str(REPO_ROOT), start_new_session=True,
        )  # fmt: skip
    try:
        testbed.wait_for(
            lambda: all(_node_ready(testbed, name) for name in IMAGE_NODES),
            60,
            f"image-mode nodes {IMAGE_NODES} Ready (log: {AGENT_LOG})",
        )
        yield IMAGE_NODES
    finally:
        _stop_agent(agent)
        remove_all_containers()
        testbed.kubectl("delete", "node", *IMAGE_NODES, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator_release(
    testbed: Testbed, image_nodes: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`helm install` of the chart; its default images are the ones `make images` built."""
    del image_nodes
    # A namespace of an earlier run may still be terminating: creating in it would fail.
    for namespace in (OPERATOR_NAMESPACE, DEMO_NAMESPACE):
        testbed.kubectl(
            "wait", "--for=delete", f"namespace/{namespace}", "--timeout=180s",
            check=False, timeout=200,
        )  # fmt: skip
    values = tmp_path_factory.mktemp("image-mode") / "placement.yaml"
    values.write_text(json.dumps({"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}))
    # The CRD may remain from an earlier release (`crds.keep`); then it is not ours to own.
    # One being deleted (by another test's uninstall) must be gone before the install.
    found = testbed.kubectl("get", "crd", CRD, "-o", "json", check=False)
    crd_exists = found.returncode == 0
    if crd_exists and json.loads(found.stdout)["metadata"].get("deletionTimestamp"):
        testbed.kubectl(
            "wait", "--for=delete", f"crd/{CRD}", "--timeout=120s", check=False, timeout=140
        )
        crd_exists = testbed.kubectl("get", "crd", CRD, check=False).returncode == 0
    testbed.helm(
        "install", RELEASE, str(REPO_ROOT / "charts" / "w5xde"),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
        "--set", f"crds.install={'false' if crd_exists else 'true'}", "--values", str(values),
        "--wait", "--timeout", "4m",
        timeout=300,
    )  # fmt: skip
    try:
        yield OPERATOR_NAMESPACE
    finally:
        testbed.kubectl(
            "delete", "cc", "--all", "-n", DEMO_NAMESPACE, "--timeout=60s", check=False, timeout=90
        )
        testbed.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, check=False)
        # Gone before the next test installs the same release into the same namespace.
        testbed.kubectl(
            "delete", "namespace", DEMO_NAMESPACE, OPERATOR_NAMESPACE, "--timeout=180s",
            check=False, timeout=200,
        )  # fmt: skip


def _status(testbed: Testbed) -> dict[str, Any]:
    result = testbed.kubectl("get", "cc", DEMO, "-n", DEMO_NAMESPACE, "-o", "json", check=False)
    return dict(json.loads(result.stdout).get("status") or {}) if result.returncode == 0 else {}


def _running_with_figures(testbed: Testbed) -> dict[str, Any] | None:
    current = _status(testbed)
    if current.get("ready") != "4/4" or current.get("phase") != "Running":
        return None
    if not current.get("throughputBytesPerSecond") or not current.get("compressionRatio"):
        return None
    return current


def _pods(testbed: Testbed, namespace: str) -> list[dict[str, Any]]:
    listed = testbed.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout
    return list(json.loads(listed)["items"])


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    """`podman inspect` of the pod's first container, found by its containerID."""
    statuses = pod["status"].get("containerStatuses") or []
    container_id = str(statuses[0].get("containerID", "")) if statuses else ""
    assert container_id.startswith(f"podman://{CONTAINER_PREFIX}"), statuses
    result = podman("inspect", "--type=container", container_id.removeprefix("podman://"))
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def test_main_journey_in_image_mode(testbed: Testbed, operator_release: str) -> None:
    operators = [
        p for p in _pods(testbed, operator_release) if p["status"].get("phase") == "Running"
    ]
    assert operators, "no operator pod Running"
    assert operators[0]["spec"]["nodeName"] in IMAGE_NODES

    testbed.kubectl("create", "namespace", DEMO_NAMESPACE)
    testbed.kubectl(
        "label", "namespace", DEMO_NAMESPACE, "pod-security.kubernetes.io/enforce=baseline"
    )
    example = yaml.safe_load((REPO_ROOT / "examples" / "cluster.yaml").read_text())
    example["spec"]["nodeSelector"] = NODE_SELECTOR
    example["spec"]["tolerations"] = TOLERATIONS
    started = time.monotonic()
    testbed.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", "-", input=json.dumps(example))
    figures = testbed.wait_for(
        lambda: _running_with_figures(testbed), 300, "READY 4/4, Running, with figures"
    )
    print(f"image mode: apply to figures in {time.monotonic() - started:.1f}s")
    table = testbed.kubectl("get", "compressionclusters", "-n", DEMO_NAMESPACE).stdout
    print(table)
    assert_running_row(table, figures, ready="4/4")
    assert int((figures.get("totals") or {}).get("lostBatches", 0)) == 0

    workers = [p for p in _pods(testbed, DEMO_NAMESPACE) if p["metadata"]["name"].startswith(DEMO)]
    assert len(workers) == 4
    assert {p["spec"]["nodeName"] for p in workers} <= set(IMAGE_NODES)
    assert any((p["spec"].get("securityContext") or {}).get("sysctls") for p in workers)
    # Each pod really ran from the image, with the pod's security context applied.
    for pod in [operators[0], *workers]:
        inspected = _container(pod)
        kind = "operator" if pod in operators else "worker"
        assert inspected["ImageName"] == image_ref(kind)
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert (
            "ALL" in (inspected["HostConfig"].get("CapDrop") or [])
            or not inspected["EffectiveCaps"]
        )
        user = str(inspected["Config"]["User"])
        assert user.split(":", maxsplit=1)[0] not in ("", "0", "root"), user
        assert inspected["HostConfig"]["NetworkMode"].startswith("ns:/run/netns/w5n-")
        # The pod's sysctls, applied by the agent to the namespace, as the container sees them.
        for sysctl in (pod["spec"].get("securityContext") or {}).get("sysctls") or []:
            path = "/proc/sys/" + sysctl["name"].replace(".", "/")
            seen = podman("exec", inspected["Name"], "cat", path)
            assert seen.returncode == 0, seen.stderr
            assert seen.stdout.split() == str(sysctl["value"]).split(), (sysctl, seen.stdout)
