"""The user journeys of DESIGN.md on the real test bed: real kubelets run the operator
and the workers from the project's images, end to end.

One operator (installed by helm, running under its chart RBAC) serves every test.
Journeys 1 and 4 are independent tests (their own namespaces). Journeys 2, 3 and 5
are one explicitly ordered scenario, `TestDemoCluster`: they walk one demo cluster
the way a user would (apply, reshape, break things, limit, delete), each step a test
so a failure names it; a step after a failed one is reported as xfail naming the
failed step (the `incremental` marker, tests/e2e/conftest.py), never as a pass.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from testbed.fixtures import Testbed
from testbed.paths import REPO_ROOT, STATE_ROOT
from testbed.printer_columns import assert_running_row

pytestmark = [pytest.mark.testbed, pytest.mark.netns, pytest.mark.slow]

OPERATOR_NAMESPACE = "e2e-w5xde-system"
DEMO_NAMESPACE = "e2e-demo"
RELEASE = "w5xde"
DEMO = "demo"
TIMINGS_FILE = STATE_ROOT / "e2e-timings.json"
OWNED_KINDS = ("statefulsets", "services", "secrets", "serviceaccounts", "roles", "rolebindings")


def cc(testbed: Testbed, namespace: str, name: str = DEMO) -> dict[str, Any]:
    result = testbed.kubectl("get", "cc", name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def status(testbed: Testbed, namespace: str, name: str = DEMO) -> dict[str, Any]:
    return dict(cc(testbed, namespace, name).get("status") or {})


def condition(testbed: Testbed, namespace: str, kind: str, name: str = DEMO) -> dict[str, Any]:
    for item in status(testbed, namespace, name).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def worker_pods(testbed: Testbed, namespace: str) -> list[dict[str, Any]]:
    pods = json.loads(testbed.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return [p for p in pods if p["metadata"]["name"].startswith(f"{DEMO}-")]


def ready_with_figures(testbed: Testbed, namespace: str, workers: int) -> dict[str, Any] | None:
    """The status once READY n/n, Running, and every figure of the printer columns non-zero."""
    current = status(testbed, namespace)
    if current.get("ready") != f"{workers}/{workers}" or current.get("phase") != "Running":
        return None
    if not current.get("throughputBytesPerSecond") or not current.get("batchesPerSecond"):
        return None
    if not current.get("compressionRatio"):
        return None
    return current


def lost(testbed: Testbed, namespace: str) -> int:
    return int((status(testbed, namespace).get("totals") or {}).get("lostBatches", 0))


def exec_in(testbed: Testbed, namespace: str, pod: str, *command: str) -> str:
    """`kubectl exec` into a worker, as a user would look inside one."""
    return testbed.kubectl("exec", pod, "-n", namespace, "--", *command).stdout


def eth0_bytes(testbed: Testbed, namespace: str, pod: str) -> tuple[int, int]:
    """(sent, received) by the pod's own network interface, read inside the pod."""
    statistics = "/sys/class/net/eth0/statistics"
    sent, received = exec_in(
        testbed, namespace, pod, "cat", f"{statistics}/tx_bytes", f"{statistics}/rx_bytes"
    ).split()
    return int(sent), int(received)


def restarts(testbed: Testbed, namespace: str, pod: str) -> dict[str, Any]:
    body = json.loads(testbed.kubectl("get", "pod", pod, "-n", namespace, "-o", "json").stdout)
    return dict((body["status"].get("containerStatuses") or [{}])[0])


def record_timing(name: str, seconds: float) -> None:
    timings = json.loads(TIMINGS_FILE.read_text()) if TIMINGS_FILE.exists() else {}
    timings[name] = round(seconds, 1)
    TIMINGS_FILE.write_text(json.dumps(timings, indent=2) + "\n")
    print(f"{name}: {seconds:.1f}s")


def adopt_existing_crds(testbed: Testbed) -> None:
    """Let helm take over CRDs another suite applied to the shared test bed with kubectl.

    CRDs are cluster-wide and kept on uninstall (`helm.sh/resource-policy: keep`), so a
    CRD without helm's ownership marks would otherwise make `helm install` refuse.
    """
    rendered = testbed.helm(
        "template",
        RELEASE,
        str(REPO_ROOT / "charts" / "w5xde"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--kube-version",
        testbed.server_version(),
    ).stdout
    names = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    for name in names:
        if testbed.kubectl("get", "crd", name, check=False).returncode != 0:
            continue
        testbed.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        testbed.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            name,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={OPERATOR_NAMESPACE}",
        )


def wait_until_gone(testbed: Testbed, namespace: str) -> None:
    """A namespace a previous run deleted may still be terminating on a shared bed."""
    testbed.wait_for(
        lambda: testbed.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        180,
        f"namespace {namespace} left over from an earlier run to be deleted",
    )


@pytest.fixture(scope="module")
def operator(testbed: Testbed) -> Iterator[str]:
    """The chart installed with helm; yields the operator's service account name."""
    wait_until_gone(testbed, OPERATOR_NAMESPACE)
    adopt_existing_crds(testbed)
    testbed.helm(
        "install",
        RELEASE,
        str(REPO_ROOT / "charts" / "w5xde"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--values",
        str(REPO_ROOT / "tests" / "chart_values" / "local-images.yaml"),
        "--wait",
        "--timeout",
        "3m",
        timeout=240,
    )
    deployment = json.loads(
        testbed.kubectl("get", "deployment", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
    )["items"][0]
    try:
        yield str(deployment["spec"]["template"]["spec"]["serviceAccountName"])
    finally:
        testbed.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, check=False)
        testbed.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def demo_namespace(testbed: Testbed, operator: str) -> Iterator[str]:
    """Where the demo cluster lives: enforcing PodSecurity `baseline` (journey 7)."""
    del operator
    name = DEMO_NAMESPACE
    wait_until_gone(testbed, name)
    testbed.kubectl("create", "namespace", name)
    testbed.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=baseline")
    try:
        yield name
    finally:
        testbed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_journey_1_helm_install_runs_the_operator_under_its_chart_rbac(
    testbed: Testbed, operator: str
) -> None:
    pods = json.loads(
        testbed.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
    )["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert running, f"no operator pod Running: {[p['status'] for p in pods]}"
    assert running[0]["spec"]["serviceAccountName"] == operator != "default"
    # A real kubelet runs the operator from its image.
    container = running[0]["status"]["containerStatuses"][0]
    assert container["image"].endswith("w5xde-operator:" + container["image"].rsplit(":", 1)[1])
    assert container["containerID"].startswith("containerd://")
    identity = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{operator}"

    def can(*args: str) -> bool:
        result = testbed.kubectl("auth", "can-i", *args, f"--as={identity}", check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "compressionclusters.w5xde.io/status", "-n", "default")
    assert can("create", "statefulsets.apps", "-n", "default")
    assert not can("create", "clusterrolebindings")
    assert not can("delete", "nodes")
    crd = testbed.kubectl("get", "crd", "compressionclusters.w5xde.io", "-o", "name").stdout
    assert "compressionclusters.w5xde.io" in crd


INVALID_SPECS = {
    "spec.workers": {"workers": 0},
    "spec.logMode": {"logMode": "loud"},
    "spec.network.sysctls": {"network": {"sysctls": {"net.core.rmem_max": "67108864"}}},
    "spec.workload.path": {"workload": {"source": "file"}},
}


@pytest.mark.parametrize("field", sorted(INVALID_SPECS))
def test_journey_4_invalid_spec_refused_naming_the_field(
    testbed: Testbed, namespace: str, operator: str, field: str
) -> None:
    del operator
    manifest = {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": "bad"},
        "spec": INVALID_SPECS[field],
    }
    result = testbed.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    assert result.returncode != 0, result.stdout
    assert field in result.stderr, result.stderr
    assert not cc(testbed, namespace, "bad")


def test_journey_4_unsafe_sysctl_degrades_with_the_reason(
    testbed: Testbed, namespace: str, operator: str
) -> None:
    del operator
    testbed.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=textwrap.dedent(
            """
            apiVersion: w5xde.io/v1alpha1
            kind: CompressionCluster
            metadata: {name: unsafe}
            spec:
              workers: 2
              network:
                sysctls: {net.ipv4.tcp_congestion_control: reno}
            """
        ),
    )
    degraded = testbed.wait_for(
        lambda: (
            status(testbed, namespace, "unsafe").get("phase") == "Degraded"
            and condition(testbed, namespace, "Degraded", "unsafe").get("status") == "True"
            and condition(testbed, namespace, "Degraded", "unsafe")
        ),
        90,
        "phase Degraded with a Degraded condition",
    )
    assert degraded["reason"] == "UnsafeSysctls", degraded
    assert "tcp_congestion_control" in degraded.get("message", ""), degraded
    generation = cc(testbed, namespace, "unsafe")["metadata"]["generation"]
    assert degraded.get("observedGeneration") == generation, degraded
    # Refused up front: no worker pod was left Pending or failing on a node.
    pods = testbed.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout
    assert "unsafe-" not in pods, pods


@pytest.mark.incremental
class TestDemoCluster:
    """Journeys 2, 3 and 5 on one demo cluster, in this order (a user's walk)."""

    def test_step_1_apply_example_streams_between_real_pods(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        started = time.monotonic()
        testbed.kubectl(
            "apply", "-n", demo_namespace, "-f", str(REPO_ROOT / "examples" / "cluster.yaml")
        )
        testbed.wait_for(
            lambda: (
                status(testbed, demo_namespace).get("ready") == "4/4"
                and status(testbed, demo_namespace).get("phase") == "Running"
            ),
            180,
            "READY 4/4, phase Running",
        )
        record_timing("apply_to_ready_seconds", time.monotonic() - started)
        testbed.wait_for(
            lambda: status(testbed, demo_namespace).get("throughputBytesPerSecond"),
            120,
            "a non-zero throughput",
        )
        record_timing("apply_to_first_throughput_seconds", time.monotonic() - started)
        figures = testbed.wait_for(
            lambda: ready_with_figures(testbed, demo_namespace, 4), 120, "all printer figures"
        )
        table = testbed.kubectl("get", "compressionclusters", "-n", demo_namespace).stdout
        print(table)
        assert_running_row(table, figures, ready="4/4")
        pods = worker_pods(testbed, demo_namespace)
        assert len({p["status"]["podIP"] for p in pods}) == 4
        assert {p["spec"]["nodeName"] for p in pods} == {"w5n-node-a", "w5n-node-b"}
        for pod in pods:
            name = pod["metadata"]["name"]
            # Each worker's own interface carried megabytes both ways...
            sent, received = eth0_bytes(testbed, demo_namespace, name)
            assert sent > 1_000_000, (name, sent)
            assert received > 1_000_000, (name, received)
            # ...and the kubelet applied the pod's socket-buffer sysctls in its netns.
            wanted = {
                s["name"]: s["value"]
                for s in pod["spec"].get("securityContext", {}).get("sysctls") or []
            }
            assert "net.ipv4.tcp_rmem" in wanted, pod["spec"].get("securityContext")
            inside = exec_in(testbed, demo_namespace, name, "cat", "/proc/sys/net/ipv4/tcp_rmem")
            assert inside.split() == wanted["net.ipv4.tcp_rmem"].split(), (name, inside)
        # Every worker's report was pulled and folded; each one moved bytes.
        assert figures["reporting"]["workersReporting"] == 4, figures["reporting"]
        assert figures["spread"]["minBytesPerSecond"] > 0, figures["spread"]
        assert lost(testbed, demo_namespace) == 0

    def test_step_2_scale_and_roll_lose_no_batch(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        delivered = int(status(testbed, demo_namespace)["totals"]["batches"])
        for replicas in (2, 4, 2):
            testbed.kubectl("scale", "cc", DEMO, "-n", demo_namespace, f"--replicas={replicas}")
            testbed.wait_for(
                lambda r=replicas: (
                    ready_with_figures(testbed, demo_namespace, r)
                    and len(worker_pods(testbed, demo_namespace)) == r
                ),
                180,
                f"READY {replicas}/{replicas} after kubectl scale",
            )
            assert cc(testbed, demo_namespace)["spec"]["workers"] == replicas
            assert lost(testbed, demo_namespace) == 0
            # Scaled-away workers' batches stay counted: the cluster's totals only grow.
            now_delivered = int(status(testbed, demo_namespace)["totals"]["batches"])
            assert now_delivered >= delivered, (replicas, now_delivered, delivered)
            delivered = now_delivered
        before = {p["metadata"]["uid"] for p in worker_pods(testbed, demo_namespace)}
        testbed.kubectl(
            "patch",
            "cc",
            DEMO,
            "-n",
            demo_namespace,
            "--type=merge",
            "-p",
            '{"spec": {"compression": {"level": 1}}}',
        )

        def rolled() -> bool:
            pods = worker_pods(testbed, demo_namespace)
            fresh = {p["metadata"]["uid"] for p in pods}
            return len(pods) == 2 and not fresh & before

        testbed.wait_for(rolled, 180, "every worker pod replaced after a spec change")
        generation = cc(testbed, demo_namespace)["metadata"]["generation"]
        testbed.wait_for(
            lambda: (
                ready_with_figures(testbed, demo_namespace, 2)
                and status(testbed, demo_namespace).get("observedGeneration") == generation
            ),
            180,
            "READY 2/2 with the new generation observed",
        )
        assert lost(testbed, demo_namespace) == 0

    def test_step_3_killed_worker_and_restarted_operator_keep_the_stream(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        victim = f"{DEMO}-0"
        before = restarts(testbed, demo_namespace, victim)
        pid = testbed.container_pid(demo_namespace, victim)
        batches_before = int(status(testbed, demo_namespace)["totals"]["batches"])
        os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            now = restarts(testbed, demo_namespace, victim)
            return now.get("restartCount", 0) > before.get("restartCount", 0) and bool(
                now.get("ready")
            )

        testbed.wait_for(restarted, 90, f"{victim} restarted by its kubelet and Ready")
        last = restarts(testbed, demo_namespace, victim)["lastState"]["terminated"]
        assert last["exitCode"] == 137, last  # SIGKILL, as the kubelet saw it
        # The killed run's counters are retired, not forgotten, when the new run reports.
        assert int(status(testbed, demo_namespace)["totals"]["batches"]) >= batches_before
        testbed.wait_for(
            lambda: (
                int(status(testbed, demo_namespace)["totals"]["batches"]) > batches_before
                and ready_with_figures(testbed, demo_namespace, 2)
            ),
            120,
            "the stream resumed after the kill",
        )
        assert lost(testbed, demo_namespace) == 0

        old = testbed.kubectl(
            "get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}"
        ).stdout.split()
        testbed.kubectl("delete", "pods", "-n", OPERATOR_NAMESPACE, *old, "--wait=true", timeout=90)

        def new_operator_ready() -> str:
            pods = json.loads(
                testbed.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json").stdout
            )["items"]
            for pod in pods:
                conditions = pod["status"].get("conditions") or []
                if pod["metadata"]["name"] not in old and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in conditions
                ):
                    return str(pod["metadata"]["name"])
            return ""

        new_operator = testbed.wait_for(new_operator_ready, 90, "a new operator pod Ready")
        batches_after_restart = int(status(testbed, demo_namespace)["totals"]["batches"])
        testbed.wait_for(
            lambda: (
                int(status(testbed, demo_namespace)["totals"]["batches"]) > batches_after_restart
            ),
            90,
            "status totals updating under the new operator",
        )
        assert lost(testbed, demo_namespace) == 0
        # What a user reads when something looks off: the operator's own log.
        log = testbed.pod_log(OPERATOR_NAMESPACE, new_operator)
        assert log.strip(), f"kubectl logs {new_operator} printed nothing"

    def test_step_4_worker_resource_limits_are_enforced(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        limits = {"cpu": "500m", "memory": "256Mi"}
        testbed.kubectl(
            "patch",
            "cc",
            DEMO,
            "-n",
            demo_namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"resources": {"limits": limits, "requests": limits}}}),
        )

        def limited() -> list[dict[str, Any]]:
            pods = worker_pods(testbed, demo_namespace)
            ok = len(pods) == 2 and all(
                p["spec"]["containers"][0].get("resources", {}).get("limits") == limits
                and p["status"].get("phase") == "Running"
                for p in pods
            )
            return pods if ok else []

        pods = testbed.wait_for(limited, 180, "workers rolled with the new limits")
        testbed.wait_for(
            lambda: ready_with_figures(testbed, demo_namespace, 2), 180, "READY 2/2 again"
        )
        for pod in pods:
            name = pod["metadata"]["name"]
            assert pod["status"]["qosClass"] == "Guaranteed", name
            # cgroup v1: the container's own cgroup is the root of each hierarchy inside.
            seen = exec_in(
                testbed,
                demo_namespace,
                name,
                "cat",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            ).split()
            assert seen == [str(256 << 20), "50000"], (name, seen)
        assert lost(testbed, demo_namespace) == 0

    def test_step_5_worker_pods_admitted_under_baseline(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        labels = json.loads(
            testbed.kubectl("get", "namespace", demo_namespace, "-o", "json").stdout
        )["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        pods = worker_pods(testbed, demo_namespace)
        assert pods
        assert all(p["status"].get("phase") == "Running" for p in pods)
        events = testbed.kubectl(
            "get", "events", "-n", demo_namespace, "--field-selector", "reason=FailedCreate"
        ).stdout
        assert "violates PodSecurity" not in events

    def test_step_6_delete_collects_every_owned_object(
        self, testbed: Testbed, demo_namespace: str
    ) -> None:
        uid = cc(testbed, demo_namespace)["metadata"]["uid"]

        def owned() -> list[str]:
            names = []
            for kind in (*OWNED_KINDS, "pods"):
                items = json.loads(
                    testbed.kubectl("get", kind, "-n", demo_namespace, "-o", "json").stdout
                )["items"]
                for item in items:
                    owners = item["metadata"].get("ownerReferences") or []
                    if any(o["uid"] == uid for o in owners) or (
                        kind == "pods" and item["metadata"]["name"].startswith(f"{DEMO}-")
                    ):
                        names.append(f"{kind}/{item['metadata']['name']}")
            return names

        before = owned()
        assert any(n.startswith("statefulsets/") for n in before), before
        testbed.kubectl("delete", "cc", DEMO, "-n", demo_namespace, timeout=120)
        testbed.wait_for(lambda: not owned() or None, 120, f"garbage collection of {before}")
