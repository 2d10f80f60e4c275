"""`kubectl w5xde run`: flags to a spec, errors naming flags, following a run."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from w5xde.plugin import run
from w5xde.plugin.main import main, parser
from w5xde.plugin.source import PluginError


def _args(*argv: str) -> Any:
    return parser().parse_args(["run", "demo", *argv])


def test_flags_become_the_spec_fields_they_name_and_nothing_else() -> None:
    args = _args(
        "--workers", "2", "--duration", "20s", "--placement", "crossNode", "--level", "auto",
        "--path", "service", "--set", "network.socketBufferBytes=0", "--set", "image=x:1",
    )  # fmt: skip
    assert run.build_spec(args) == {
        "workers": 2,
        "duration": "20s",
        "placement": "crossNode",
        "compression": {"level": "auto"},
        "network": {"path": "service", "socketBufferBytes": 0},
        "image": "x:1",
    }
    nodes = run.build_spec(_args("--placement", "nodes", "--nodes", "a, b,"))
    assert nodes["placementNodes"] == ["a", "b"]


def test_dry_run_client_prints_the_manifest_without_any_api_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "demo", "--workers", "3", "--dry-run=client", "-n", "lab"])
    assert code == 0
    assert yaml.safe_load(capsys.readouterr().out) == {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": "demo", "namespace": "lab"},
        "spec": {"workers": 3},
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--level", "30"], "--level: compression.level: must be an integer -7..22"),
        (["--workers", "0"], "--workers: Input should be greater than or equal to 1"),
        (["--placement", "nodes"], "--nodes: placementNodes: give the node names"),
        (["--set", "network.chunkBytes=100"], "--set network.chunkBytes: Input should be"),
        (["--wait"], "--wait needs --duration"),
        (["--rm", "--duration", "5s"], "--rm needs --wait"),
        (["--duration", "5 s"], "--duration: duration '5 s' is not like '30s'"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "demo", "--dry-run=client", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kubectl w5xde: {message}"), err
    assert len(err.strip().splitlines()) == 1


class FakeSource:
    """Statuses in turn, as the API server would return them."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.reads = 0

    def cluster(self, name: str) -> dict[str, Any]:
        status = self.statuses[min(self.reads, len(self.statuses) - 1)]
        self.reads += 1
        return {"metadata": {"name": name, "generation": 1}, "spec": {}, "status": status}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_follow_waits_for_the_current_generation_to_finish() -> None:
    statuses = [
        {"phase": "Pending"},
        {"phase": "Completed", "observedGeneration": 0},  # an older generation's end
        {"phase": "Running", "observedGeneration": 1, "ready": "2/2"},
        {"phase": "Completed", "observedGeneration": 1, "runs": [{"id": "run-1"}]},
    ]
    clock = Clock()
    source = FakeSource(statuses)
    final = run.follow(source, "demo", 100, clock=clock, sleep=clock.sleep)
    assert final["status"]["runs"] == [{"id": "run-1"}]
    assert source.reads == 4


def test_follow_gives_up_on_a_placement_the_scheduler_cannot_meet() -> None:
    degraded = {
        "phase": "Degraded",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "WorkerCannotRun",
                "message": "demo-1: Unschedulable: 0/2 nodes are available",
            }
        ],
    }
    clock = Clock()
    with pytest.raises(PluginError, match="demo cannot run: WorkerCannotRun: demo-1: Unsched"):
        run.follow(FakeSource([degraded]), "demo", 1000, clock=clock, sleep=clock.sleep)
    assert run.STUCK_GRACE_SECONDS <= clock.now < run.STUCK_GRACE_SECONDS + 5
    clock = Clock()
    with pytest.raises(PluginError, match="did not finish within 10 s"):
        run.follow(
            FakeSource([{"phase": "Running", "observedGeneration": 1}]), "demo", 10,
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip


def test_exit_codes_follow_the_outcome_and_the_expectations() -> None:
    done = {"spec": {}, "status": {"phase": "Completed"}}
    assert run.outcome_code(done) == 0
    assert run.outcome_code({"spec": {}, "status": {"phase": "Failed"}}) == 1
    missed = {
        "spec": {"expect": {"minThroughputBytesPerSecond": 1}},
        "status": {"phase": "Completed", "conditions": [{"type": "Passed", "status": "False"}]},
    }
    assert run.outcome_code(missed) == 3
    conditions = [{"type": "Passed", "status": "True"}]
    passed = {**missed, "status": {**missed["status"], "conditions": conditions}}
    assert run.outcome_code(passed) == 0


def test_the_result_says_where_the_links_ran() -> None:
    cluster = {
        "metadata": {"name": "demo"},
        "spec": {"placement": "sameNode", "network": {"path": "service"}},
        "status": {
            "runs": [
                {
                    "id": "run-1", "outcome": "Completed", "seconds": 20.0, "workers": 2,
                    "nodes": 1, "links": 2, "linksSharingNode": 2,
                    "throughputBytesPerSecond": 2e6, "totals": {"batches": 10},
                }
            ]
        },
    }  # fmt: skip
    lines = run.result_lines(cluster)
    assert lines[0] == "demo run-1: Completed after 20.0 s, 2 workers on 1 nodes"
    assert lines[-1] == "  links 2: 0 cross-node, 2 same-node; placement sameNode, path service"
