"""Real workers report, the operator folds, users see it through kubectl."""

from __future__ import annotations

import difflib
import json
import os
import signal
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
        if (
            status.get("phase") == "Running"
            and status.get("reporting", {}).get("workersReporting") == 2
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
    # Bounded whatever the size: a spread and a short list, no per-worker map.
    assert "workers" not in status
    assert status["spread"]["maxBytesPerSecond"] >= status["spread"]["minBytesPerSecond"] > 0
    assert {item["name"] for item in status["notableWorkers"]} <= {"demo-0", "demo-1"}
    assert len(json.dumps(status)) < 8192
    ready = _condition(status, "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] == 1

    row = testbed.kubectl("get", "cc", "demo", "-n", namespace, "--no-headers").stdout.split()
    assert row[0:3] == ["demo", "2/2", "Running"]
    assert row[4] == "MB/s"
    assert float(row[5]) > 1  # RATIO
    assert float(row[6]) > 0  # BATCHES/S

    # Per-worker figures stay out of the object the API server stores: a per-worker map
    # written by hand is pruned by the schema.
    ghost = {"status": {"workers": {"demo-9": {"node": "nowhere", "batches": 5}}}}
    testbed.kubectl(
        "patch", "cc", "demo", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(ghost),
    )  # fmt: skip
    assert "workers" not in _status(testbed, namespace, "demo")

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
    # The running workers learnt the new size through the operator's report requests.
    testbed.wait_for(
        lambda: (
            _status(testbed, namespace, "demo").get("reporting", {}).get("workersReporting") == 3
        ),
        30,
        f"three workers reporting\n{operator.log()}",
    )
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

    folds_before = _status(testbed, namespace, "roll").get("reporting", {}).get("foldedAt")
    second = start_operator()
    testbed.wait_for(
        lambda: (
            _status(testbed, namespace, "roll").get("reporting", {}).get("foldedAt")
            not in (None, folds_before)
        ),
        60,
        f"a fold by the restarted operator\n{second.log()}",
    )
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
        # Long enough that a fold sees it running on a loaded machine (a 4 s run could be
        # over before the first fold with both pods ready, so it never was Running).
        {"workers": 2, "duration": "10s", "statusIntervalSeconds": 1, "workload": QUIET},
    )

    def completed() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "short")
        return status if status.get("phase") == "Completed" else None

    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=120s", "cc/short"
    )
    status = testbed.wait_for(completed, 30, f"phase Completed\n{operator.log()}")
    (run,) = status["runs"]
    assert run["outcome"] == "Completed"
    assert run["totals"] == status["totals"]  # the first run's figures are its own
    assert run["throughput"]["samples"] >= 1
    assert status["completedAt"]
    assert status["totals"]["batches"] > 0
    assert status["throughputBytesPerSecond"] > 0
    testbed.wait_for(
        lambda: get_json(testbed, "-n", namespace, "sts", "short")["spec"]["replicas"] == 0,
        30,
        "workers scaled to zero",
    )
    testbed.wait_for(
        lambda: not get_json(testbed, "-n", namespace, "pods")["items"], 60, "the pods gone"
    )
    # The loop keeps looking at the cluster: READY follows the pods, figures stay.
    testbed.wait_for(
        lambda: _status(testbed, namespace, "short").get("ready") == "0/2", 30, "READY 0/2"
    )
    kept = _status(testbed, namespace, "short")
    assert kept["phase"] == "Completed"
    assert kept["totals"] == status["totals"]
    assert kept["completedAt"] == status["completedAt"]
    # Posted by the fold loop itself (outside kopf's handlers), for `kubectl describe`.
    reasons = testbed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=short",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip
    assert "Completed" in reasons
    assert "Running" in reasons


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
        status = _status(testbed, namespace, "quiet")
        # Streaming, not only reporting: a worker reports before it is enrolled and has
        # joined, and freezing its only peer then keeps it unready for good (READY 0/2).
        return (
            status.get("reporting", {}).get("workersReporting") == 2
            and status.get("ready") == "2/2"
            and float(status.get("throughputBytesPerSecond") or 0) > 0
        )

    testbed.wait_for(reported, 120, f"both workers reporting and streaming\n{operator.log()}")
    pid = testbed.container_pid(namespace, "quiet-1")
    os.kill(pid, signal.SIGSTOP)  # its report endpoint hangs: the fold must go on
    try:

        def stale() -> dict[str, Any] | None:
            status = _status(testbed, namespace, "quiet")
            notable = {item["name"]: item for item in status.get("notableWorkers", [])}
            if notable.get("quiet-1", {}).get("reason") == "Stale" and (
                status.get("phase") == "Degraded"
            ):
                return status
            return None

        status = testbed.wait_for(stale, 30, f"quiet-1 marked stale\n{operator.log()}")
        degraded = _condition(status, "Degraded")
        assert degraded["reason"] == "WorkersStale"
        assert "quiet-1" in degraded["message"]
        # The other worker kept being folded while quiet-1 hung.
        assert status["reporting"]["workersReporting"] == 1
        assert status["ready"] == "1/2"
    finally:
        os.kill(pid, signal.SIGCONT)

    def recovered() -> bool:
        status = _status(testbed, namespace, "quiet")
        stale = [i for i in status.get("notableWorkers", []) if i["reason"] != "Slowest"]
        return not stale and status.get("phase") == "Running"

    testbed.wait_for(recovered, 60, "quiet-1 reporting again")


def test_required_placement_with_too_few_nodes_degrades_naming_the_rule(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    nodes = len(get_json(testbed, "nodes")["items"])
    apply_cluster(
        testbed,
        namespace,
        "onepernode",
        {"workers": nodes + 1, "placement": "required", "workload": QUIET},
    )
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Degraded", "--timeout=90s", "cc/onepernode"
    )
    degraded = _condition(_status(testbed, namespace, "onepernode"), "Degraded")
    assert degraded["reason"] == "WorkerCannotRun"
    assert "Unschedulable" in degraded["message"]
    assert "anti-affinity" in degraded["message"]
    pods = get_json(testbed, "-n", namespace, "pods")["items"]
    placed = [pod["spec"].get("nodeName") for pod in pods if pod["spec"].get("nodeName")]
    assert len(placed) == len(set(placed)) == nodes  # never two workers on one node
