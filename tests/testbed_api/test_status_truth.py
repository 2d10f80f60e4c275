"""Issue 19's status truth on the real API server with real workers: a worker restart is
visible and does not flip the phase, an operator restart writes no `Pending 0/N`, a
completed run with no current problem is not Degraded, a scale stays inside its run
and its one deadline, and `kubectl w5xde status --workers` names a hung worker's error
in its row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from .conftest import OperatorProcess, apply_cluster, get_json

pytestmark = pytest.mark.testbed

#: Enough traffic to measure, little enough for a shared 2-core machine.
QUIET = {"rateLimitBytesPerSecond": 2_000_000, "batchBytes": 16384}
PLUGIN = str(Path(sys.executable).with_name("kubectl-w5xde"))


def _status(testbed: Any, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(testbed, "-n", namespace, "cc", name).get("status", {})
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _reasons(testbed: Any, namespace: str, name: str) -> list[str]:
    return testbed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "jsonpath={.items[*].reason}",
    ).stdout.split()  # fmt: skip


class StatusWatch:
    """Every phase and READY the API server stores, as `kubectl get -w` streams them."""

    def __init__(self, testbed: Any, namespace: str, name: str) -> None:
        self.seen: list[tuple[str, str]] = []
        self.process = subprocess.Popen(
            [
                str(testbed.bin_dir / "kubectl"), "get", "cc", name, "-n", namespace, "-w",
                "-o", 'jsonpath={.status.phase} {.status.ready}{"\\n"}',
            ],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=testbed.env(),
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            phase, _, ready = line.strip().partition(" ")
            if phase:
                self.seen.append((phase, ready))

    def stop(self) -> list[tuple[str, str]]:
        self.process.terminate()
        self.process.wait(10)
        self.reader.join(5)
        return self.seen


def _running(testbed: Any, namespace: str, name: str, workers: int, operator: Any) -> None:
    def up() -> bool:
        status = _status(testbed, namespace, name)
        return bool(
            status.get("phase") == "Running"
            and status.get("reporting", {}).get("workersReporting") == workers
        )

    testbed.wait_for(up, 120, f"{name} Running with {workers} reporting\n{operator.log()}")


def test_a_worker_restart_is_visible_and_does_not_flip_the_phase(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed, namespace, "kick", {"workers": 2, "statusIntervalSeconds": 1, "workload": QUIET}
    )
    _running(testbed, namespace, "kick", 2, operator)
    watch = StatusWatch(testbed, namespace, "kick")
    try:
        os.kill(testbed.container_pid(namespace, "kick-1"), signal.SIGKILL)

        def restart_named() -> dict[str, Any] | None:
            status = _status(testbed, namespace, "kick")
            restarted = [
                item
                for item in status.get("notableWorkers", [])
                if item["name"] == "kick-1" and item["reason"] == "Restarted"
            ]
            return status if status.get("restartCount", 0) >= 1 and restarted else None

        try:
            status = testbed.wait_for(restart_named, 60, "the restart in status")
        except BaseException:
            print(json.dumps(_status(testbed, namespace, "kick"), indent=1)[:6000])
            print(operator.log())
            raise
        (named,) = [i for i in status["notableWorkers"] if i["name"] == "kick-1"]
        assert named["reason"] == "Restarted"  # named once, by its restart
        assert "exit 137" in named["message"]
        testbed.wait_for(
            lambda: "WorkerRestarted" in _reasons(testbed, namespace, "kick"), 30, "the Event"
        )
        _running(testbed, namespace, "kick", 2, operator)
    finally:
        seen = watch.stop()
    phases = {phase for phase, _ in seen}
    assert "Pending" not in phases, seen  # one worker restarting is not the cluster's restart


def test_an_operator_restart_writes_no_pending_from_an_empty_index(
    testbed: Any, namespace: str, start_operator: Any
) -> None:
    first = start_operator()
    apply_cluster(
        testbed, namespace, "adopt", {"workers": 2, "statusIntervalSeconds": 1, "workload": QUIET}
    )
    _running(testbed, namespace, "adopt", 2, first)
    first.stop()
    folded_before = _status(testbed, namespace, "adopt")["reporting"]["foldedAt"]
    watch = StatusWatch(testbed, namespace, "adopt")
    try:
        second = start_operator()
        testbed.wait_for(
            lambda: _status(testbed, namespace, "adopt")["reporting"]["foldedAt"] != folded_before,
            60,
            f"a fold by the restarted operator\n{second.log()}",
        )
        _running(testbed, namespace, "adopt", 2, second)
    finally:
        seen = watch.stop()
    assert all(phase == "Running" and ready == "2/2" for phase, ready in seen), seen


def test_a_completed_run_with_no_current_problem_is_not_degraded(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    """A worker hung through the end of a bounded run: stale (and Degraded) while the run
    goes, and `--workers` shows its timeout in its row; once the run completed, the
    stale worker is no current problem, and Degraded clears."""
    apply_cluster(
        testbed,
        namespace,
        "hang",
        {"workers": 2, "duration": "20s", "statusIntervalSeconds": 1, "workload": QUIET},
    )
    _running(testbed, namespace, "hang", 2, operator)
    pid = testbed.container_pid(namespace, "hang-1")
    os.kill(pid, signal.SIGSTOP)
    try:
        testbed.wait_for(
            lambda: (
                _condition(_status(testbed, namespace, "hang"), "Degraded").get("reason")
                == "WorkersStale"
            ),
            30,
            f"hang-1 stale\n{operator.log()}",
        )
        progressing = _condition(_status(testbed, namespace, "hang"), "Progressing")
        assert progressing["reason"] == "WorkersLost", progressing
        assert "hang-1" in progressing["message"]
        shown = subprocess.run(
            [PLUGIN, "--kubeconfig", str(testbed.kubeconfig), "-n", namespace, "status",
             "hang", "--workers"],
            capture_output=True, text=True, timeout=90, check=False, env=testbed.env(),
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
        row = next(
            line
            for line in shown.stdout.split("workers (pulled now)")[1].splitlines()
            if "hang-1" in line
        )
        assert "Timeout" in row or "timed out" in row or "HTTP" in row, row
        testbed.kubectl(
            "wait", "-n", namespace, "--for=condition=Complete", "--timeout=120s", "cc/hang"
        )
    finally:
        os.kill(pid, signal.SIGCONT)

    def settled() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "hang")
        degraded = _condition(status, "Degraded")
        return status if degraded.get("status") == "False" else None

    status = testbed.wait_for(settled, 30, f"Degraded cleared\n{operator.log()}")
    assert status["phase"] == "Completed"
    assert _condition(status, "Degraded")["reason"] == "AsSpecified"


#: Long enough for the pod a scale adds to start and join before the deadline.
RUN_SECONDS = 25


def test_a_scale_within_a_bounded_run_keeps_its_one_deadline(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_cluster(
        testbed,
        namespace,
        "grow",
        {
            "workers": 2,
            "duration": f"{RUN_SECONDS}s",
            "statusIntervalSeconds": 1,
            "workload": QUIET,
        },
    )
    _running(testbed, namespace, "grow", 2, operator)
    started = datetime.fromisoformat(_status(testbed, namespace, "grow")["startedAt"])
    deadline = started + timedelta(seconds=RUN_SECONDS)

    def published() -> float | None:
        found = testbed.kubectl("get", "cm", "grow-run", "-n", namespace, check=False)
        if found.returncode != 0:
            return None
        value = json.loads(
            testbed.kubectl("get", "cm", "grow-run", "-n", namespace, "-o", "json").stdout
        )["data"].get("deadline")
        return float(value) if value else None

    value = testbed.wait_for(published, 30, f"the run deadline published\n{operator.log()}")
    assert value == pytest.approx(deadline.timestamp(), abs=1)
    testbed.kubectl("scale", "cc", "grow", "-n", namespace, "--replicas", "3")
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=150s", "cc/grow"
    )
    status = _status(testbed, namespace, "grow")
    (run,) = status["runs"]  # one run: the scale did not start another
    assert run["outcome"] == "Completed"
    assert run["seconds"] == RUN_SECONDS
    assert [scale["workers"] for scale in run["scales"]] == [3]
    assert datetime.fromisoformat(run["startedAt"]) == started
    completed = datetime.fromisoformat(status["completedAt"])
    # The workers, the added one too, stop at the one deadline: no long wind-down.
    assert completed - deadline < timedelta(seconds=12), (completed, deadline)
