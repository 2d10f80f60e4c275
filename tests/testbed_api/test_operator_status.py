"""Real workers report, the operator folds, users see it through kubectl."""

from __future__ import annotations

import difflib
import json
import os
import signal
import time
from typing import Any

import pytest

from .conftest import OperatorProcess, apply_cluster, get_json

pytestmark = pytest.mark.testbed

#: Enough traffic to measure, little enough for a shared 2-core machine.
QUIET = {"rateLimitBytesPerSecond": 2_000_000, "batchBytes": 16384}


def _status(testbed: Any, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(testbed, "-n", namespace, "cc", name).get("status", {})
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_workers_report_and_the_fold_shows_in_kubectl_get(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "demo",
        {"workers": 2, "statusIntervalSeconds": 1, "workload": QUIET},
    )
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/demo")

    def running_with_figures() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "demo")
        workers = status.get("workers", {})
        if (
            status.get("phase") == "Running"
            and set(workers) == {"demo-0", "demo-1"}
            and status.get("throughputBytesPerSecond", 0) > 0
        ):
            return status
        return None

    status = testbed.wait_for(
        running_with_figures, 90, f"figures folded from 2 workers\n{operator.log()}"
    )
    assert status["ready"] == "2/2"
    assert status["readyWorkers"] == 2
    assert status["throughput"].endswith(" MB/s")
    assert status["compressionRatio"] > 1
    assert status["totals"]["batches"] > 0
    assert status["totals"]["lostBatches"] == 0
    assert status["observedGeneration"] == 1
    assert status["startedAt"]
    ready = _condition(status, "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] == 1

    row = testbed.kubectl("get", "cc", "demo", "-n", namespace, "--no-headers").stdout.split()
    assert row[0:3] == ["demo", "2/2", "Running"]
    assert row[4] == "MB/s"
    assert float(row[5]) > 1  # RATIO
    assert float(row[6]) > 0  # BATCHES/S

    # An entry of a pod that does not exist is dropped by the next fold.
    ghost = {"status": {"workers": {"demo-9": {"node": "nowhere", "batches": 5}}}}
    testbed.kubectl(
        "patch", "cc", "demo", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(ghost),
    )  # fmt: skip
    testbed.wait_for(
        lambda: "demo-9" not in _status(testbed, namespace, "demo").get("workers", {}),
        30,
        "the gone pod's entry dropped",
    )

    # kubectl scale goes through the scale subresource to spec.workers and the StatefulSet.
    testbed.kubectl("scale", "cc", "demo", "-n", namespace, "--replicas", "3")
    testbed.wait_for(
        lambda: get_json(testbed, "-n", namespace, "statefulset", "demo")["spec"]["replicas"] == 3,
        30,
        "the StatefulSet scaled to 3",
    )
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/demo")
    status = _status(testbed, namespace, "demo")
    assert status["ready"] == "3/3"
    assert status["observedGeneration"] == 2
    # The scale subresource names the pods it counts, so an HPA can target a cluster.
    scale = get_json(testbed, "-n", namespace, "cc", "demo", "--subresource=scale")
    assert scale["spec"]["replicas"] == 3
    selected = get_json(testbed, "-n", namespace, "pods", "-l", scale["status"]["selector"])
    assert sorted(pod["metadata"]["name"] for pod in selected["items"]) == [
        "demo-0",
        "demo-1",
        "demo-2",
    ]
    events = testbed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=demo",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip
    assert "Created" in events
    assert "Scaled" in events


def test_spec_change_rolls_and_restart_adopts(
    testbed: Any, namespace: str, start_operator: Any
) -> None:
    first = start_operator()
    apply_cluster(testbed, namespace, "roll", {"workers": 1, "workload": QUIET})
    testbed.wait_for(
        lambda: testbed.kubectl("get", "-n", namespace, "sts", "roll", check=False).returncode == 0,
        60,
        f"the StatefulSet\n{first.log()}",
    )
    before = get_json(testbed, "-n", namespace, "sts", "roll")
    first.stop()

    second = start_operator()
    time.sleep(4)  # resume handlers and a few folds
    after = get_json(testbed, "-n", namespace, "sts", "roll")
    changed = "\n".join(
        difflib.unified_diff(
            json.dumps(before["spec"], indent=1, sort_keys=True).splitlines(),
            json.dumps(after["spec"], indent=1, sort_keys=True).splitlines(),
            lineterm="",
        )
    )
    assert after["metadata"]["generation"] == before["metadata"]["generation"], (
        f"the restarted operator changed the StatefulSet:\n{changed}\n{second.log()}"
    )
    assert after["metadata"]["uid"] == before["metadata"]["uid"]

    testbed.kubectl(
        "patch", "cc", "roll", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"compression": {"level": 5}}}),
    )  # fmt: skip
    testbed.wait_for(
        lambda: (
            get_json(testbed, "-n", namespace, "sts", "roll")["metadata"]["annotations"][
                "w5xde.io/template-hash"
            ]
            != before["metadata"]["annotations"]["w5xde.io/template-hash"]
        ),
        30,
        f"a new pod template\n{second.log()}",
    )
    testbed.wait_for(
        lambda: (
            "Rolled"
            in testbed.kubectl(
                "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
            ).stdout
        ),
        30,
        "a Rolled event",
    )


def test_unsafe_sysctl_degrades_with_reason_and_event(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "unsafe",
        {"workers": 1, "network": {"sysctls": {"net.ipv4.tcp_congestion_control": "bbr"}}},
    )
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Degraded", "--timeout=60s", "cc/unsafe"
    )
    status = _status(testbed, namespace, "unsafe")
    assert status["phase"] == "Degraded"
    degraded = _condition(status, "Degraded")
    assert degraded["reason"] == "UnsafeSysctls"
    assert "net.ipv4.tcp_congestion_control" in degraded["message"]
    assert testbed.kubectl("get", "-n", namespace, "sts", "unsafe", check=False).returncode != 0
    events = testbed.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert "UnsafeSysctls" in events


def test_bounded_run_completes_keeps_figures_and_scales_to_zero(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "short",
        {"workers": 2, "duration": "4s", "statusIntervalSeconds": 1, "workload": QUIET},
    )

    def completed() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "short")
        return status if status.get("phase") == "Completed" else None

    status = testbed.wait_for(completed, 120, f"phase Completed\n{operator.log()}")
    assert status["completedAt"]
    assert status["totals"]["batches"] > 0
    assert status["throughputBytesPerSecond"] > 0
    testbed.wait_for(
        lambda: get_json(testbed, "-n", namespace, "sts", "short")["spec"]["replicas"] == 0,
        30,
        "workers scaled to zero",
    )
    time.sleep(3)  # folds keep running; the final figures must stay
    kept = _status(testbed, namespace, "short")
    assert kept["phase"] == "Completed"
    assert kept["totals"] == status["totals"]


def test_no_tuned_node_degrades_instead_of_pending_silently(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(testbed, namespace, "tuned", {"workers": 1, "network": {"nodeTuning": True}})
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Degraded", "--timeout=60s", "cc/tuned"
    )
    degraded = _condition(_status(testbed, namespace, "tuned"), "Degraded")
    assert degraded["reason"] == "WorkerCannotRun"
    assert "Unschedulable" in degraded["message"]


def test_silent_worker_goes_stale_and_recovers(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "quiet",
        {"workers": 2, "statusIntervalSeconds": 1, "workload": QUIET},
    )

    def reported() -> bool:
        workers = _status(testbed, namespace, "quiet").get("workers", {})
        return {"quiet-0", "quiet-1"} <= set(workers)

    testbed.wait_for(reported, 120, f"reports from both workers\n{operator.log()}")
    pid = testbed.container_pid(namespace, "quiet-1")
    os.kill(pid, signal.SIGSTOP)
    try:

        def stale() -> dict[str, Any] | None:
            status = _status(testbed, namespace, "quiet")
            entry = status.get("workers", {}).get("quiet-1", {})
            return status if entry.get("stale") and status.get("phase") == "Degraded" else None

        status = testbed.wait_for(stale, 30, "quiet-1 marked stale")
        degraded = _condition(status, "Degraded")
        assert degraded["reason"] == "WorkersStale"
        assert "quiet-1" in degraded["message"]
    finally:
        os.kill(pid, signal.SIGCONT)

    def recovered() -> bool:
        status = _status(testbed, namespace, "quiet")
        entry = status.get("workers", {}).get("quiet-1", {})
        return entry.get("stale") is False and status.get("phase") == "Running"

    testbed.wait_for(recovered, 60, "quiet-1 reporting again")
