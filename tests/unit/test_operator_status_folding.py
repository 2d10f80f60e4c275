"""Folding worker reports: sums, ratio, stale workers, gone pods, phases, conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec, CompressionClusterStatus
from w5xde.operator.status_folding import (
    Observation,
    PodState,
    Problem,
    StatefulSetState,
    fold_status,
    format_throughput,
    isoformat,
    parse_status,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLLED = StatefulSetState(4, 4, 4, "r1", "r1", up_to_date=True)


def _report(seconds_ago: float, **figures: Any) -> dict[str, Any]:
    return {"lastReport": isoformat(NOW - timedelta(seconds=seconds_ago)), **figures}


def _status(workers: dict[str, Any], **extra: Any) -> CompressionClusterStatus:
    return CompressionClusterStatus.model_validate({"workers": workers, **extra})


def _observe(
    pods: list[PodState],
    statefulset: StatefulSetState | None = ROLLED,
    generation: int = 2,
    applied: int = 2,
    **extra: Any,
) -> Observation:
    return Observation(
        now=NOW,
        generation=generation,
        applied_generation=applied,
        statefulset=statefulset,
        pods=tuple(pods),
        **extra,
    )


def _ready(*names: str) -> list[PodState]:
    return [PodState(name, ready=True) for name in names]


def _conditions(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in patch["conditions"]}


def test_sums_ratio_and_per_worker_means() -> None:
    workers = {
        "d-0": _report(
            1,
            throughputBytesPerSecond=100e6,
            wireBytesPerSecond=40e6,
            batchesPerSecond=1000,
            networkSeconds=10,
            compressionSeconds=2,
            rssBytes=50_000_000,
            batches=10,
            rawBytes=1000,
            wireBytes=400,
            resentBatches=1,
        ),
        "d-1": _report(
            2,
            throughputBytesPerSecond=112.4e6,
            wireBytesPerSecond=60e6,
            batchesPerSecond=2240.5,
            networkSeconds=12.4,
            compressionSeconds=4.8,
            rssBytes=61_000_000,
            batches=5,
            rawBytes=500,
            wireBytes=250,
        ),
    }
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = fold_status(spec, _status(workers), _observe(_ready("d-0", "d-1")))
    patch = fold.patch
    assert patch["throughput"] == "212.4 MB/s"
    assert patch["throughputBytesPerSecond"] == 212.4e6
    assert patch["wireBytesPerSecond"] == 100e6
    assert patch["batchesPerSecond"] == 3240.5
    assert patch["compressionRatio"] == 2.12
    assert patch["networkSeconds"] == 11.2
    assert patch["compressionSeconds"] == 3.4
    assert patch["memoryBytes"] == 61_000_000
    assert patch["totals"] == {
        "batches": 15,
        "rawBytes": 1500,
        "wireBytes": 650,
        "lostBatches": 0,
        "corruptBatches": 0,
        "resentBatches": 1,
    }
    assert patch["ready"] == "2/2"
    assert patch["readyWorkers"] == 2
    assert patch["phase"] == "Running"
    assert "workers" not in patch
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert patch["startedAt"] == isoformat(NOW)


def test_gone_pods_are_dropped_from_the_rates_but_their_counts_are_kept() -> None:
    workers = {
        "d-0": _report(1, throughputBytesPerSecond=10e6, wireBytesPerSecond=5e6, batches=1),
        "d-5": _report(
            1, throughputBytesPerSecond=99e6, wireBytesPerSecond=1e6, batches=50, lostBatches=2
        ),
    }
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    fold = fold_status(spec, _status(workers), _observe(_ready("d-0")))
    assert fold.patch["workers"] == {"d-5": None}
    assert fold.patch["throughputBytesPerSecond"] == 10e6
    # The scaled-away worker's batches, and its losses, stay in the cluster's totals.
    assert fold.patch["retiredTotals"]["batches"] == 50
    assert fold.patch["totals"]["batches"] == 51
    assert fold.patch["totals"]["lostBatches"] == 2
    assert fold.patch["foldedWorkers"] == {
        "d-0": {"incarnation": "", "totals": {**ZERO_TOTALS, "batches": 1}}
    }


ZERO_TOTALS = {
    "batches": 0,
    "rawBytes": 0,
    "wireBytes": 0,
    "lostBatches": 0,
    "corruptBatches": 0,
    "resentBatches": 0,
}


def _apply(status: CompressionClusterStatus, patch: dict[str, Any]) -> CompressionClusterStatus:
    """What the API server stores after the operator's merge patch of the status."""
    stored = status.model_dump(mode="json", by_alias=True)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(stored.get(key), dict):
            merged = {**stored[key], **value}
            stored[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            stored[key] = value
    return parse_status(stored)


def test_a_restarted_worker_never_makes_the_totals_go_backwards() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    observation = _observe(_ready("d-0"))
    first_run = {"d-0": _report(1, batches=1000, lostBatches=1, incarnation="aaaa")}
    status = _apply(_status(first_run), fold_status(spec, _status(first_run), observation).patch)
    assert status.totals.batches == 1000

    # The container restarts: its counters start again from zero under a new incarnation.
    restarted = status.model_copy(
        update={"workers": _status({"d-0": _report(1, batches=10, incarnation="bbbb")}).workers}
    )
    second = fold_status(spec, restarted, observation)
    assert second.patch["retiredTotals"]["batches"] == 1000
    assert second.patch["totals"]["batches"] == 1010
    assert second.patch["totals"]["lostBatches"] == 1

    # Folding again without a new run changes nothing (the old run is retired once).
    status = _apply(restarted, second.patch)
    third = fold_status(spec, status, observation)
    assert third.patch["retiredTotals"]["batches"] == 1000
    assert third.patch["totals"]["batches"] == 1010


def test_a_scaled_away_worker_is_retired_once() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    workers = {
        "d-0": _report(1, batches=5, incarnation="a0"),
        "d-1": _report(1, batches=7, incarnation="a1"),
    }
    status = _apply(
        _status(workers), fold_status(spec, _status(workers), _observe(_ready("d-0", "d-1"))).patch
    )
    # d-1's last report, newer than the operator's last look, is what counts.
    status = status.model_copy(
        update={
            "workers": {
                **status.workers,
                "d-1": _status({"d-1": _report(1, batches=9, incarnation="a1")}).workers["d-1"],
            }
        }
    )
    after_scale = fold_status(spec, status, _observe(_ready("d-0")))
    assert after_scale.patch["foldedWorkers"]["d-1"] is None
    assert after_scale.patch["totals"]["batches"] == 5 + 9
    status = _apply(status, after_scale.patch)
    assert fold_status(spec, status, _observe(_ready("d-0"))).patch["totals"]["batches"] == 14


def test_stale_workers_are_flagged_excluded_and_degrade() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "statusIntervalSeconds": 10})
    workers = {
        "d-0": _report(5, throughputBytesPerSecond=10e6, wireBytesPerSecond=5e6, batches=3),
        "d-1": _report(31, throughputBytesPerSecond=77e6, wireBytesPerSecond=7e6, batches=4),
    }
    fold = fold_status(spec, _status(workers), _observe(_ready("d-0", "d-1")))
    assert fold.stale_workers == ("d-1",)
    assert fold.patch["workers"] == {"d-1": {"stale": True}}
    assert fold.patch["throughputBytesPerSecond"] == 10e6
    assert fold.patch["totals"]["batches"] == 7  # counters keep what the stale one did
    assert fold.patch["ready"] == "1/2"
    assert fold.patch["phase"] == "Degraded"
    degraded = _conditions(fold.patch)["Degraded"]
    assert degraded["status"] == "True"
    assert degraded["reason"] == "WorkersStale"
    assert "d-1" in degraded["message"]
    assert [event.reason for event in fold.events] == ["WorkersStale"]


def test_already_flagged_stale_worker_is_not_patched_again() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    workers = {"d-0": _report(100, stale=True)}
    fold = fold_status(spec, _status(workers), _observe(_ready("d-0")))
    assert "workers" not in fold.patch
    assert fold.stale_workers == ("d-0",)


def test_worker_that_never_reported_is_starting_not_stale() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = fold_status(spec, _status({}), _observe([PodState("d-0", False), *_ready("d-1")]))
    assert fold.patch["phase"] == "Pending"
    assert fold.patch["ready"] == "1/2"
    assert fold.patch["throughput"] == "0.0 MB/s"
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "Starting"


def test_ready_is_not_claimed_for_a_generation_not_yet_applied() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = fold_status(spec, _status({}), _observe(_ready("d-0", "d-1"), generation=3, applied=2))
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["Progressing"]["reason"] == "Applying"


def test_rolling_out_is_progressing_not_ready() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 4})
    rolling = StatefulSetState(4, 4, 2, "r1", "r2", up_to_date=True)
    fold = fold_status(
        spec, _status({}), _observe(_ready("d-0", "d-1", "d-2", "d-3"), statefulset=rolling)
    )
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "RollingOut"


def test_pods_that_cannot_run_degrade_with_their_reason() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    pods = [PodState("d-0", False, "SysctlForbidden: net.ipv4.tcp_rmem")]
    fold = fold_status(spec, _status({}), _observe(pods))
    assert fold.patch["phase"] == "Degraded"
    degraded = _conditions(fold.patch)["Degraded"]
    assert degraded["reason"] == "WorkerCannotRun"
    assert "SysctlForbidden" in degraded["message"]
    assert fold.events[0].type == "Warning"


def test_spec_problems_degrade_and_fatal_fails() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    problem = Problem("UnsafeSysctls", "network.sysctls: kernel.msgmax not safe")
    degraded = fold_status(spec, _status({}), _observe([], problems=(problem,)))
    assert degraded.patch["phase"] == "Degraded"
    assert _conditions(degraded.patch)["Degraded"]["reason"] == "UnsafeSysctls"
    fatal = fold_status(spec, _status({}), _observe([], fatal=Problem("NoWorkerImage", "no image")))
    assert fatal.patch["phase"] == "Failed"
    assert _conditions(fatal.patch)["Degraded"]["reason"] == "NoWorkerImage"


def test_degraded_event_is_posted_once() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    problem = Problem("UnsafeSysctls", "bad")
    first = fold_status(spec, _status({}), _observe([], problems=(problem,)))
    assert [event.reason for event in first.events] == ["UnsafeSysctls"]
    again = fold_status(
        spec,
        CompressionClusterStatus.model_validate(first.patch),
        _observe([], problems=(problem,)),
    )
    assert again.events == ()


def test_bounded_run_completes_with_run_averages() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    started = isoformat(NOW - timedelta(seconds=60 + 5 + 2))
    workers = {"d-0": _report(1, rawBytes=600_000_000, wireBytes=200_000_000, batches=6000)}
    fold = fold_status(spec, _status(workers, startedAt=started), _observe(_ready("d-0")))
    assert fold.completed
    assert fold.patch["phase"] == "Completed"
    assert fold.patch["completedAt"] == isoformat(NOW)
    assert fold.patch["throughput"] == "10.0 MB/s"
    assert fold.patch["batchesPerSecond"] == 100
    assert fold.patch["compressionRatio"] == 3
    assert _conditions(fold.patch)["Ready"]["reason"] == "Completed"
    assert [event.reason for event in fold.events] == ["Completed"]

    early = isoformat(NOW - timedelta(seconds=30))
    running = fold_status(spec, _status(workers, startedAt=early), _observe(_ready("d-0")))
    assert not running.completed
    assert running.patch["completedAt"] is None


def test_throughput_text() -> None:
    assert format_throughput(212_400_000) == "212.4 MB/s"
    assert format_throughput(0) == "0.0 MB/s"


def test_parse_status_ignores_foreign_fields() -> None:
    status = parse_status({"phase": "Running", "kopf": {"progress": {}}})
    assert status.phase.value == "Running"
    assert parse_status(None) == CompressionClusterStatus()


def test_one_malformed_entry_does_not_break_the_fold() -> None:
    status = parse_status(
        {"workers": {"d-0": {"batches": "many"}, "d-1": {"batches": 3}, "gone": {"x": 1}}}
    )
    assert set(status.workers) == {"d-0", "d-1", "gone"}
    assert status.workers["d-1"].batches == 3
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = fold_status(spec, status, _observe(_ready("d-0", "d-1")))
    assert fold.patch["workers"] == {"gone": None}
    assert fold.patch["totals"]["batches"] == 3
