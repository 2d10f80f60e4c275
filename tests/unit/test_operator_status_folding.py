"""Folding pulled reports: sums, ratio, spread, notable workers, retired runs, staleness,
phases and conditions; and the status stays bounded at 1,000 workers."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from w5xde.api.v1alpha1 import (
    MAX_NOTABLE_WORKERS,
    CompressionClusterSpec,
    CompressionClusterStatus,
    Phase,
    RunState,
    RunSummary,
    SoftwareVersions,
    Spread,
    Totals,
)
from w5xde.contract.figures import format_throughput
from w5xde.contract.report import WorkerReport
from w5xde.contract.statistics import SampleStats
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Event,
    Fetched,
    FetchError,
    Observation,
    PodState,
    Problem,
    StatefulSetState,
)
from w5xde.operator.status_folding import (
    Fold,
    completed_status,
    fold_status,
    isoformat,
    parse_status,
    parse_time,
    spec_digest,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLLED = StatefulSetState(4, 4, 4, "r1", "r1", up_to_date=True)


def _report(name: str, seconds_ago: float = 1, **figures: Any) -> Fetched:
    generated = (NOW - timedelta(seconds=seconds_ago)).timestamp()
    figures.setdefault("incarnation", "i1")
    return Fetched(name, report=WorkerReport(name=name, generated_at=generated, **figures))


def _observe(
    pods: list[PodState],
    fetched: list[Fetched] = (),  # type: ignore[assignment]
    statefulset: StatefulSetState | None = ROLLED,
    generation: int = 2,
    applied: int = 2,
    now: datetime = NOW,
    **extra: Any,
) -> Observation:
    return Observation(
        now=now,
        generation=generation,
        applied_generation=applied,
        statefulset=statefulset,
        pods=tuple(pods),
        fetched=tuple(fetched),
        **extra,
    )


def _ready(*names: str) -> list[PodState]:
    return [PodState(name, ready=True, ip=f"10.0.0.{i + 1}") for i, name in enumerate(names)]


def _heard(*names: str, seconds_ago: float = 0) -> dict[str, float]:
    return {name: (NOW - timedelta(seconds=seconds_ago)).timestamp() for name in names}


def _fold(
    spec: CompressionClusterSpec,
    observation: Observation,
    status: CompressionClusterStatus | None = None,
    ledger: Ledger | None = None,
    heard: dict[str, float] | None = None,
) -> Fold:
    names = [pod.name for pod in observation.pods]
    return fold_status(
        spec,
        status or CompressionClusterStatus(),
        observation,
        ledger or Ledger(),
        _heard(*names) if heard is None else heard,
    )


def _folded_ago(patch: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The patch as if its fold had happened `seconds` before NOW."""
    moment = (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return {**patch, "reporting": {**patch["reporting"], "foldedAt": moment}}


def _conditions(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in patch["conditions"]}


def _apply(status: CompressionClusterStatus, patch: dict[str, Any]) -> CompressionClusterStatus:
    merged = {**status.model_dump(mode="json", by_alias=True), **patch}
    return CompressionClusterStatus.model_validate(merged)


def test_sums_ratio_spread_and_per_worker_means() -> None:
    fetched = [
        _report(
            "d-0",
            throughput_bytes_per_second=100e6,
            wire_bytes_per_second=40e6,
            batches_per_second=1000,
            network_seconds=10,
            compression_seconds=2,
            rss_bytes=50_000_000,
            batches=10,
            raw_bytes=1000,
            wire_bytes=400,
            resent_batches=1,
        ),
        _report(
            "d-1",
            seconds_ago=2,
            throughput_bytes_per_second=112.4e6,
            wire_bytes_per_second=60e6,
            batches_per_second=2240.5,
            network_seconds=12.4,
            compression_seconds=4.8,
            rss_bytes=61_000_000,
            batches=5,
            raw_bytes=500,
            wire_bytes=250,
        ),
    ]
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    patch = _fold(spec, _observe(_ready("d-0", "d-1"), fetched)).patch
    assert patch["throughput"] == "212.4 MB/s"
    assert patch["throughputBytesPerSecond"] == 212.4e6
    assert patch["wireBytesPerSecond"] == 100e6
    assert patch["batchesPerSecond"] == 3240.5
    assert patch["compressionRatio"] == 2.12
    assert patch["networkSeconds"] == 11.2
    assert patch["compressionSeconds"] == 3.4
    assert patch["memoryBytes"] == 61_000_000
    assert patch["spread"] == {
        "minBytesPerSecond": 100e6,
        "p50BytesPerSecond": 100e6,
        "maxBytesPerSecond": 112.4e6,
    }
    assert patch["totals"] == {
        "batches": 15,
        "rawBytes": 1500,
        "wireBytes": 650,
        "lostBatches": 0,
        "corruptBatches": 0,
        "resentBatches": 1,
    }
    assert patch["reporting"]["workersReporting"] == 2
    assert patch["reporting"]["oldestReportAt"] == "2026-01-01T11:59:58.000Z"
    assert patch["reporting"]["foldedAt"] == "2026-01-01T12:00:00.000Z"
    assert patch["ready"] == "2/2"
    assert patch["phase"] == "Running"
    assert "workers" not in patch
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert patch["startedAt"] == isoformat(NOW)


def test_status_stays_bounded_at_a_thousand_workers() -> None:
    names = [f"big-{index}" for index in range(1000)]
    fetched = [
        _report(
            name,
            node=f"node-{index % 50}",
            throughput_bytes_per_second=1e6 + index,
            wire_bytes_per_second=5e5,
            batches=10**9,
            raw_bytes=10**15,
            wire_bytes=10**14,
        )
        for index, name in enumerate(names)
    ]
    # Some fail in each way, so the notable list is full of them.
    for index in range(0, 40, 2):
        fetched[index] = Fetched(names[index], error=FetchError.UNREACHABLE, message="x" * 500)
    spec = CompressionClusterSpec.model_validate({"workers": 1000})
    fold = _fold(spec, _observe(_ready(*names), fetched))
    assert len(fold.patch["notableWorkers"]) == MAX_NOTABLE_WORKERS
    assert all(len(item["message"]) <= 256 for item in fold.patch["notableWorkers"])
    status = CompressionClusterStatus.model_validate(fold.patch)
    full_run = fold.patch["runs"] or [
        {"id": "run-1", "outcome": "SpecChanged", "spread": fold.patch["spread"],
         "startedAt": NOW.isoformat(), "completedAt": NOW.isoformat()}
    ]  # fmt: skip
    kept = [{**full_run[0], "id": f"run-{index}"} for index in range(10)]
    status = status.model_copy(update={"runs": [RunSummary.model_validate(item) for item in kept]})
    size = len(json.dumps(status.model_dump(mode="json", by_alias=True)))
    assert size <= 65536, size
    assert fold.patch["reporting"]["workersFailing"] == 20
    assert fold.patch["spread"]["minBytesPerSecond"] == 1e6 + 1


def test_notable_workers_name_failures_first_then_the_slowest() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 4})
    fetched = [
        _report("d-0", throughput_bytes_per_second=50e6),
        _report("d-1", throughput_bytes_per_second=5e6, node="n2"),
        Fetched("d-2", error=FetchError.BAD_REPORT, message="bad or missing response signature"),
        _report("d-3", throughput_bytes_per_second=80e6),
    ]
    notable = _fold(spec, _observe(_ready("d-0", "d-1", "d-2", "d-3"), fetched)).patch[
        "notableWorkers"
    ]
    assert [(item["name"], item["reason"]) for item in notable] == [
        ("d-2", "BadReport"),
        ("d-1", "Slowest"),
        ("d-0", "Slowest"),
        ("d-3", "Slowest"),
    ]
    assert notable[0]["message"] == "bad or missing response signature"
    assert notable[1]["node"] == "n2"


def test_gone_pods_are_dropped_from_the_rates_but_their_counts_are_kept() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    first = _fold(
        spec,
        _observe(
            _ready("d-0", "d-5"),
            [
                _report("d-0", throughput_bytes_per_second=10e6, batches=1),
                _report("d-5", throughput_bytes_per_second=99e6, batches=50, lost_batches=2),
            ],
        ),
    )
    after = _fold(
        spec,
        _observe(_ready("d-0"), [_report("d-0", throughput_bytes_per_second=10e6, batches=2)]),
        status=_apply(CompressionClusterStatus(), first.patch),
        ledger=first.ledger,
    )
    assert after.patch["throughputBytesPerSecond"] == 10e6
    assert after.patch["totals"]["batches"] == 52
    assert after.patch["totals"]["lostBatches"] == 2  # a loss is never forgotten
    assert after.patch["retiredTotals"] == {
        "batches": 50,
        "rawBytes": 0,
        "wireBytes": 0,
        "lostBatches": 2,
        "corruptBatches": 0,
        "resentBatches": 0,
    }


def test_a_restarted_worker_never_makes_the_totals_go_backwards() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    pods = _ready("d-0")
    first = _fold(spec, _observe(pods, [_report("d-0", batches=100, raw_bytes=1000)]))
    restarted = _fold(
        spec,
        _observe(pods, [_report("d-0", batches=3, raw_bytes=30, incarnation="i2")]),
        ledger=first.ledger,
    )
    assert restarted.patch["totals"]["batches"] == 103
    assert restarted.patch["totals"]["rawBytes"] == 1030
    again = _fold(
        spec,
        _observe(pods, [_report("d-0", batches=10, raw_bytes=100, incarnation="i2")]),
        ledger=restarted.ledger,
    )
    assert again.patch["totals"]["batches"] == 110  # the old run retired once, not twice


def test_an_unreachable_worker_keeps_its_last_counts() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    pods = _ready("d-0", "d-1")
    first = _fold(spec, _observe(pods, [_report("d-0", batches=5), _report("d-1", batches=7)]))
    missing = _fold(
        spec,
        _observe(
            pods,
            [_report("d-0", batches=6), Fetched("d-1", error=FetchError.UNREACHABLE)],
        ),
        ledger=first.ledger,
    )
    assert missing.patch["totals"]["batches"] == 13
    assert missing.patch["notableWorkers"][0] == {
        "name": "d-1",
        "node": "",
        "throughputBytesPerSecond": 0,
        "reason": "Unreachable",
        "message": "",
    }
    assert missing.patch["phase"] == "Running"  # one missed report is not stale yet


def test_after_an_operator_restart_totals_are_floored_at_the_published_ones() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    published = Totals(batches=500, raw_bytes=5000)
    status = CompressionClusterStatus(totals=published, retired_totals=Totals(batches=100))
    # d-1 restarted while no operator watched: its old run's 300 batches are unknown now.
    fresh = Ledger.from_status(status.retired_totals, status.totals)
    fold = _fold(
        spec,
        _observe(_ready("d-0", "d-1"), [_report("d-0", batches=110), _report("d-1", batches=5)]),
        status=status,
        ledger=fresh,
    )
    assert fold.patch["totals"]["batches"] == 500
    assert fold.patch["totals"]["rawBytes"] == 5000
    grown = _fold(
        spec,
        _observe(_ready("d-0", "d-1"), [_report("d-0", batches=400), _report("d-1", batches=50)]),
        ledger=fold.ledger,
    )
    assert grown.patch["totals"]["batches"] == 550


def test_stale_workers_are_named_excluded_and_degrade() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "statusIntervalSeconds": 10})
    pods = _ready("d-0", "d-1")
    first = _fold(spec, _observe(pods, [_report("d-0", batches=3), _report("d-1", batches=4)]))
    heard = {**_heard("d-0"), **_heard("d-1", seconds_ago=31)}
    fold = _fold(
        spec,
        _observe(
            pods,
            [
                _report("d-0", throughput_bytes_per_second=10e6, batches=3),
                Fetched("d-1", error=FetchError.UNREACHABLE, message="timed out"),
            ],
        ),
        ledger=first.ledger,
        heard=heard,
    )
    assert fold.stale_workers == ("d-1",)
    assert fold.patch["throughputBytesPerSecond"] == 10e6
    assert fold.patch["totals"]["batches"] == 7  # counters keep what the stale one did
    assert fold.patch["ready"] == "1/2"
    assert fold.patch["phase"] == "Degraded"
    assert fold.patch["notableWorkers"][0]["reason"] == "Stale"
    degraded = _conditions(fold.patch)["Degraded"]
    assert degraded["reason"] == "WorkersStale"
    assert "d-1" in degraded["message"]
    assert [event.reason for event in fold.events] == ["WorkersStale"]


def test_worker_that_never_reported_is_starting_not_stale() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    pods = [PodState("d-0", False), *_ready("d-1")]
    fold = _fold(spec, _observe(pods))
    assert fold.patch["phase"] == "Pending"
    assert fold.patch["ready"] == "1/2"
    assert fold.patch["throughput"] == "0.0 MB/s"
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "Starting"


def test_ready_is_not_claimed_for_a_generation_not_yet_applied() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = _fold(spec, _observe(_ready("d-0", "d-1"), generation=3, applied=2))
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["observedGeneration"] == 2
    assert conditions["Progressing"]["reason"] == "Applying"


def test_rolling_out_is_progressing_not_ready() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 4})
    rolling = StatefulSetState(4, 4, 2, "r1", "r2", up_to_date=True)
    fold = _fold(spec, _observe(_ready("d-0", "d-1", "d-2", "d-3"), statefulset=rolling))
    conditions = _conditions(fold.patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "RollingOut"


def test_pods_that_cannot_run_degrade_with_their_reason() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    pods = [PodState("d-0", False, "SysctlForbidden: net.ipv4.tcp_rmem")]
    fold = _fold(spec, _observe(pods))
    assert fold.patch["phase"] == "Degraded"
    degraded = _conditions(fold.patch)["Degraded"]
    assert degraded["reason"] == "WorkerCannotRun"
    assert "SysctlForbidden" in degraded["message"]
    assert fold.events[0].type == "Warning"


def test_spec_problems_degrade_and_fatal_fails() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    problem = Problem("UnsafeSysctls", "network.sysctls: kernel.msgmax not safe")
    degraded = _fold(spec, _observe([], problems=(problem,)))
    assert degraded.patch["phase"] == "Degraded"
    assert _conditions(degraded.patch)["Degraded"]["reason"] == "UnsafeSysctls"
    fatal = _fold(spec, _observe([], fatal=Problem("NoWorkerImage", "no image")))
    assert fatal.patch["phase"] == "Failed"
    assert _conditions(fatal.patch)["Degraded"]["reason"] == "NoWorkerImage"


def test_degraded_event_is_posted_once() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    problem = Problem("UnsafeSysctls", "bad")
    first = _fold(spec, _observe([], problems=(problem,)))
    assert [event.reason for event in first.events] == ["UnsafeSysctls"]
    again = _fold(
        spec,
        _observe([], problems=(problem,)),
        status=CompressionClusterStatus.model_validate(first.patch),
    )
    assert again.events == ()


def _started(seconds_ago: float, **run: Any) -> CompressionClusterStatus:
    """A status whose run (generation 2, as `_observe` applies) began `seconds_ago`."""
    started = isoformat(NOW - timedelta(seconds=seconds_ago))
    state = RunState(id="run-1", generation=2, started_at=started, **run)
    return CompressionClusterStatus(started_at=started, run=state, observed_generation=2)


def test_bounded_run_completes_once_every_worker_sent_its_final_report() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    status = _started(61)
    figures = {"raw_bytes": 600_000_000, "wire_bytes": 200_000_000, "batches": 6000}
    still_sending = _fold(spec, _observe(_ready("d-0"), [_report("d-0", **figures)]), status)
    assert not still_sending.completed  # no final report yet, and within the grace
    fold = _fold(spec, _observe(_ready("d-0"), [_report("d-0", finished=True, **figures)]), status)
    assert fold.completed
    assert fold.patch["phase"] == "Completed"
    assert fold.patch["completedAt"] == isoformat(NOW)
    assert fold.patch["throughput"] == "10.0 MB/s"
    assert fold.patch["batchesPerSecond"] == 100
    assert fold.patch["compressionRatio"] == 3
    assert _conditions(fold.patch)["Ready"]["reason"] == "Completed"
    complete = _conditions(fold.patch)["Complete"]
    assert (complete["status"], complete["reason"]) == ("True", "RunFinished")
    assert complete["observedGeneration"] == 2
    assert [event.reason for event in fold.events] == ["Completed", "ExpectationsMet"]
    (summary,) = fold.patch["runs"]
    assert (summary["id"], summary["outcome"]) == ("run-1", "Completed")
    assert summary["throughputBytesPerSecond"] == 10e6
    assert summary["totals"]["batches"] == 6000
    # No worker reported its versions here: the run keeps none rather than invent them.
    assert summary.get("versions") is None

    early = _started(30)
    running = _fold(
        spec, _observe(_ready("d-0"), [_report("d-0", finished=True, **figures)]), early
    )
    assert not running.completed
    assert running.patch["completedAt"] is None


def test_a_bounded_run_whose_workers_never_finish_completes_after_the_grace() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    late = _started(60 + 15 + 3)
    fold = _fold(
        spec, _observe(_ready("d-0"), [Fetched("d-0", error=FetchError.UNREACHABLE)]), late
    )
    assert fold.completed


def test_throughput_text() -> None:
    assert format_throughput(212_400_000) == "212.4 MB/s"
    assert format_throughput(0) == "0.0 MB/s"


def test_parse_status_ignores_foreign_fields_and_survives_garbage() -> None:
    status = parse_status({"phase": "Running", "kopf": {"progress": {}}, "workers": {"x": 1}})
    assert status.phase.value == "Running"
    assert parse_status(None) == CompressionClusterStatus()
    broken = parse_status({"observedGeneration": 3, "totals": {"batches": "many"}})
    assert broken.observed_generation == 3
    assert broken.totals == Totals()


def test_a_second_bounded_run_reports_its_own_figures_not_the_sum() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "10s", "statusIntervalSeconds": 5}
    )
    # Run 1 moved 1,000 MB in 10 s and completed; its counters are in the totals.
    first_totals = Totals(batches=1000, raw_bytes=1_000_000_000, wire_bytes=500_000_000)
    done = CompressionClusterStatus(
        observed_generation=2,
        phase="Completed",
        totals=first_totals,
        retired_totals=first_totals,
        run=RunState(id="run-1", generation=2, started_at=isoformat(NOW), completed_at="x"),
    )
    # The spec changes (generation 3): the pods roll, new incarnations start from zero.
    spec3 = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "10s", "statusIntervalSeconds": 5, "compression": {"level": 9}}
    )
    ledger = Ledger.from_status(done.retired_totals, done.totals)
    begin = _fold(
        spec3, _observe(_ready("d-0"), generation=3, applied=3), status=done, ledger=ledger
    )
    run = begin.patch["run"]
    assert run["id"] == "run-2"
    assert run["generation"] == 3
    assert run["startTotals"]["rawBytes"] == 1_000_000_000
    assert [item["id"] for item in begin.patch["runs"]] == []  # run-1 had closed already
    status = _apply(CompressionClusterStatus(), begin.patch)
    status = status.model_copy(
        update={
            "run": status.run.model_copy(
                update={"started_at": isoformat(NOW - timedelta(seconds=11))}
            )
        }
    )
    final = [
        _report("d-0", finished=True, batches=300, raw_bytes=200_000_000, wire_bytes=50_000_000)
    ]
    end = _fold(
        spec3,
        _observe(_ready("d-0"), final, generation=3, applied=3),
        status=status,
        ledger=begin.ledger,
    )
    assert end.completed
    assert end.patch["throughputBytesPerSecond"] == 20e6  # 200 MB / 10 s, not 1,200 MB
    assert end.patch["batchesPerSecond"] == 30
    assert end.patch["compressionRatio"] == 4
    assert end.patch["runs"][-1]["id"] == "run-2"
    assert end.patch["runs"][-1]["totals"]["batches"] == 300
    assert spec_digest(spec3) != spec_digest(spec)


def test_a_spec_change_closes_the_running_run_with_its_samples() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "statusIntervalSeconds": 10})
    pods = _ready("d-0", "d-1")
    status = _started(100)
    ledger = Ledger()
    rates = [(100e6, 90e6), (110e6, 100e6), (105e6, 95e6)]
    for step, (a, b) in enumerate(rates):
        fetched = [
            _report("d-0", throughput_bytes_per_second=a, batches_per_second=10, batches=step + 1),
            _report("d-1", throughput_bytes_per_second=b, batches_per_second=10, batches=step + 1),
        ]
        fold = _fold(spec, _observe(pods, fetched), status=status, ledger=ledger)
        status, ledger = _apply(status, fold.patch), fold.ledger
    samples = status.run.throughput_samples
    assert samples.count == 3
    assert samples.mean == pytest.approx(200e6)
    changed = _fold(spec, _observe(pods, generation=3, applied=3), status=status, ledger=ledger)
    (closed,) = changed.patch["runs"]
    assert closed["outcome"] == "SpecChanged"
    assert closed["throughput"]["mean"] == pytest.approx(200e6)
    assert closed["throughput"]["samples"] == 3
    assert closed["throughput"]["ci95"] == pytest.approx(4.303 * 10e6 / 3**0.5, rel=1e-3)
    assert (closed["throughput"]["min"], closed["throughput"]["max"]) == (190e6, 210e6)
    assert closed["workers"] == 2
    assert changed.patch["run"]["id"] == "run-2"
    assert changed.patch["startedAt"] == isoformat(NOW)  # the new run starts now


def test_kept_runs_are_bounded() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    runs = [RunSummary(id=f"run-{index}", outcome="Completed") for index in range(1, 11)]
    status = _started(50).model_copy(update={"runs": runs})
    status = status.model_copy(update={"run": status.run.model_copy(update={"id": "run-11"})})
    fold = _fold(spec, _observe(_ready("d-0"), generation=3, applied=3), status=status)
    assert len(fold.patch["runs"]) == 10
    assert fold.patch["runs"][-1]["id"] == "run-11"
    assert fold.patch["runs"][0]["id"] == "run-2"
    assert fold.patch["run"]["id"] == "run-12"


def test_unbounded_runs_are_not_complete_and_fatal_specs_fail() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    running = _conditions(_fold(spec, _observe(_ready("d-0"))).patch)
    assert (running["Complete"]["status"], running["Complete"]["reason"]) == ("False", "Unbounded")
    assert running["Failed"]["status"] == "False"
    fatal = _fold(spec, _observe([], fatal=Problem("NoWorkerImage", "no image")))
    failed = _conditions(fatal.patch)["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "NoWorkerImage")


# --- Exact conditions, events, run summaries and boundaries ---------------------------


def _states(patch: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Each condition's (status, reason, message), by type."""
    return {
        item["type"]: (item["status"], item["reason"], item["message"])
        for item in patch["conditions"]
    }


AS_SPECIFIED = {
    "Degraded": ("False", "AsSpecified", ""),
    "Failed": ("False", "AsSpecified", ""),
}


def test_conditions_of_a_stable_unbounded_cluster() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fold = _fold(spec, _observe(_ready("d-0", "d-1")))
    assert _states(fold.patch) == {
        "Ready": ("True", "WorkersReady", "2/2 workers ready"),
        "Progressing": ("False", "Stable", "all workers up to date"),
        "Complete": ("False", "Unbounded", "runs until deleted"),
        **AS_SPECIFIED,
    }
    assert {item["observedGeneration"] for item in fold.patch["conditions"]} == {2}


@pytest.mark.parametrize(
    ("statefulset", "generation", "progressing"),
    [
        (ROLLED, 3, ("True", "Applying", "applying the spec")),
        (None, 2, ("True", "Applying", "applying the spec")),
        (
            StatefulSetState(2, 2, 1, "r1", "r2", up_to_date=True),
            2,
            ("True", "RollingOut", "replacing worker pods"),
        ),
    ],
    ids=["generation-not-applied", "no-statefulset-yet", "rolling-out"],
)
def test_conditions_while_the_spec_is_applied_or_rolled_out(
    statefulset: StatefulSetState | None, generation: int, progressing: tuple[str, str, str]
) -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    observation = _observe(_ready("d-0", "d-1"), statefulset=statefulset, generation=generation)
    states = _states(_fold(spec, observation).patch)
    assert states["Ready"] == ("False", "WorkersNotReady", "2/2 workers ready")
    assert states["Progressing"] == progressing


def test_conditions_of_a_bounded_run_starting_up() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "duration": "90s"})
    pods = [*_ready("d-0"), PodState("d-1", ready=False, ip="10.0.0.2")]
    assert _states(_fold(spec, _observe(pods)).patch) == {
        "Ready": ("False", "WorkersNotReady", "1/2 workers ready"),
        "Progressing": ("True", "Starting", "1/2 workers ready"),
        "Complete": ("False", "RunInProgress", "runs for 90s"),
        **AS_SPECIFIED,
    }


def test_a_fatal_problem_fails_and_degrades_even_with_every_worker_ready() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    fatal = Problem("NoWorkerImage", "no worker image: set image or install with one")
    fold = _fold(spec, _observe(_ready("d-0"), fatal=fatal))
    assert fold.patch["phase"] == "Failed"
    message = "no worker image: set image or install with one"
    assert _states(fold.patch) == {
        "Ready": ("False", "WorkersNotReady", "1/1 workers ready"),
        "Progressing": ("False", "Stable", "all workers up to date"),
        "Degraded": ("True", "NoWorkerImage", message),
        "Complete": ("False", "Unbounded", "runs until deleted"),
        "Failed": ("True", "NoWorkerImage", message),
    }
    # No problem to name: the Event points at the conditions.
    assert fold.events == (Event("Warning", "Degraded", "see status.conditions"),)


def test_every_problem_is_in_the_degraded_condition_and_its_event() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    problems = (
        Problem("UnsafeSysctls", "network.sysctls: kernel.msgmax not safe"),
        Problem("SocketSysctlsOmitted", "net.core.rmem_max is not namespaced"),
    )
    fold = _fold(spec, _observe(_ready("d-0"), problems=problems))
    message = "network.sysctls: kernel.msgmax not safe; net.core.rmem_max is not namespaced"
    assert _states(fold.patch)["Degraded"] == ("True", "UnsafeSysctls", message)
    assert fold.events == (Event("Warning", "UnsafeSysctls", message),)


def test_phase_events_are_posted_on_the_transition_only() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    observation = _observe(_ready("d-0"), [_report("d-0")])
    first = _fold(spec, observation)
    assert first.patch["phase"] == "Running"
    assert first.events == (Event("Normal", "Running", "all workers are ready"),)
    again = _fold(spec, observation, status=_apply(CompressionClusterStatus(), first.patch))
    assert again.patch["phase"] == "Running"
    assert again.events == ()


def test_completed_run_posts_its_event_and_closes_its_conditions() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    status = _started(61).model_copy(update={"phase": "Running"})
    fold = _fold(spec, _observe(_ready("d-0"), [_report("d-0", finished=True)]), status)
    passed = "run-1: every expectation held (maxLostBatches)"
    assert fold.events == (
        Event("Normal", "Completed", "the bounded run is over; figures kept"),
        Event("Normal", "ExpectationsMet", passed),
    )
    assert _states(fold.patch) == {
        "Ready": ("False", "Completed", "the run is over"),
        "Progressing": ("False", "Completed", "the run is over"),
        "Complete": ("True", "RunFinished", "the bounded run is over"),
        "Passed": ("True", "ExpectationsMet", passed),
        **AS_SPECIFIED,
    }


def test_workers_going_stale_in_a_cluster_already_degraded_get_their_own_event() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 3, "statusIntervalSeconds": 10})
    pods = _ready("d-0", "d-1", "d-2")
    problem = Problem("UnsafeSysctls", "bad sysctl")
    first = _fold(
        spec,
        _observe(pods, [_report("d-0"), _report("d-1"), _report("d-2")], problems=(problem,)),
    )
    assert [event.reason for event in first.events] == ["UnsafeSysctls"]
    stale = _fold(
        spec,
        _observe(pods, [_report("d-0")], problems=(problem,)),
        status=_apply(CompressionClusterStatus(), _folded_ago(first.patch, 20)),
        ledger=first.ledger,
        heard={**_heard("d-0"), **_heard("d-1", "d-2", seconds_ago=40)},
    )
    assert stale.events == (Event("Warning", "WorkersStale", "no recent report from: d-1, d-2"),)
    assert _states(stale.patch)["Degraded"] == (
        "True",
        "UnsafeSysctls",
        "bad sysctl; no report for 3 intervals from: d-1, d-2",
    )
    # ... and only that one, however many folds they stay stale.
    still = _fold(
        spec,
        _observe(pods, [_report("d-0")], problems=(problem,)),
        status=_apply(_apply(CompressionClusterStatus(), first.patch), _folded_ago(stale.patch, 5)),
        ledger=stale.ledger,
        heard={**_heard("d-0"), **_heard("d-1", "d-2", seconds_ago=40)},
    )
    assert still.stale_workers == ("d-1", "d-2")
    assert still.events == ()


def test_the_stale_event_is_posted_once_while_the_workers_stay_stale() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "statusIntervalSeconds": 10})
    pods = _ready("d-0", "d-1")
    heard = {**_heard("d-0"), **_heard("d-1", seconds_ago=40)}
    observation = _observe(pods, [_report("d-0")])
    first = _fold(spec, observation, heard=heard)
    message = "no report for 3 intervals from: d-1"
    assert first.events == (Event("Warning", "WorkersStale", message),)
    again = _fold(
        spec,
        observation,
        status=_apply(CompressionClusterStatus(), first.patch),
        ledger=first.ledger,
        heard=heard,
    )
    assert again.stale_workers == ("d-1",)
    assert again.events == ()


@pytest.mark.parametrize(
    ("seconds_ago", "stale"),
    [(29.9, False), (30.0, False), (30.1, True)],
)
def test_a_worker_is_stale_after_more_than_three_intervals(seconds_ago: float, stale: bool) -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1, "statusIntervalSeconds": 10})
    fold = _fold(spec, _observe(_ready("d-0")), heard=_heard("d-0", seconds_ago=seconds_ago))
    assert fold.stale_workers == (("d-0",) if stale else ())
    assert fold.patch["readyWorkers"] == (0 if stale else 1)


def test_a_worker_never_heard_of_or_without_an_address_is_not_stale() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "statusIntervalSeconds": 10})
    pods = [*_ready("d-0"), PodState("d-1", ready=False)]
    fold = _fold(spec, _observe(pods), heard=_heard("d-1", seconds_ago=300))
    assert fold.stale_workers == ()
    assert fold.patch["phase"] == "Pending"


@pytest.mark.parametrize(
    ("count", "listed"),
    [
        (10, "s-00, s-01, s-02, s-03, s-04, s-05, s-06, s-07, s-08, s-09"),
        (12, "s-00, s-01, s-02, s-03, s-04, s-05, s-06, s-07, s-08, s-09 and 2 more"),
    ],
)
def test_the_stale_message_names_ten_workers_then_counts_the_rest(count: int, listed: str) -> None:
    names = [f"s-{index:02}" for index in range(count)]
    spec = CompressionClusterSpec.model_validate({"workers": count, "statusIntervalSeconds": 10})
    fold = _fold(spec, _observe(_ready(*names)), heard=_heard(*names, seconds_ago=60))
    message = f"no report for 3 intervals from: {listed}"
    assert _states(fold.patch)["Degraded"] == ("True", "WorkersStale", message)
    assert fold.events == (Event("Warning", "WorkersStale", message),)


def test_a_failing_worker_is_named_with_its_node() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    pods = [PodState("d-0", True, ip="10.0.0.1", node="n1"), PodState("d-1", True, node="n3")]
    fetched = [_report("d-0"), Fetched("d-1", error=FetchError.UNREACHABLE, message="no pod IP")]
    notable = _fold(spec, _observe(pods, fetched)).patch["notableWorkers"]
    # One worker reporting is not "the slowest" of anything.
    assert notable == [
        {
            "name": "d-1",
            "node": "n3",
            "throughputBytesPerSecond": 0,
            "reason": "Unreachable",
            "message": "no pod IP",
        }
    ]


def test_two_reporting_workers_are_both_listed_slowest_first_with_their_rates() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fetched = [
        _report("d-0", node="n1", throughput_bytes_per_second=30e6),
        _report("d-1", node="n2", throughput_bytes_per_second=20e6),
    ]
    notable = _fold(spec, _observe(_ready("d-0", "d-1"), fetched)).patch["notableWorkers"]
    assert notable == [
        {"name": "d-1", "node": "n2", "throughputBytesPerSecond": 20e6, "reason": "Slowest",
         "message": ""},
        {"name": "d-0", "node": "n1", "throughputBytesPerSecond": 30e6, "reason": "Slowest",
         "message": ""},
    ]  # fmt: skip


def test_the_slowest_fill_only_the_room_the_failures_leave() -> None:
    names = [f"d-{index}" for index in range(12)]
    fetched = [Fetched(name, error=FetchError.BAD_REPORT) for name in names[:9]]
    fetched += [
        _report(name, throughput_bytes_per_second=rate)
        for name, rate in zip(names[9:], (3e6, 1e6, 2e6), strict=True)
    ]
    spec = CompressionClusterSpec.model_validate({"workers": 12})
    notable = _fold(spec, _observe(_ready(*names), fetched)).patch["notableWorkers"]
    assert [(item["name"], item["reason"]) for item in notable] == [
        *[(name, "BadReport") for name in sorted(names[:9])],
        ("d-10", "Slowest"),
    ]


def test_a_fresh_cluster_starts_run_1_with_its_first_samples() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 3})
    fetched = [
        _report("d-0", node="n1", throughput_bytes_per_second=10e6, batches_per_second=1.5),
        _report("d-1", node="n2", throughput_bytes_per_second=20e6, batches_per_second=2.5),
        _report("d-2", throughput_bytes_per_second=30e6, batches_per_second=3.5),
    ]
    fold = _fold(spec, _observe(_ready("d-0", "d-1", "d-2"), fetched))
    zero = {"batches": 0, "rawBytes": 0, "wireBytes": 0, "lostBatches": 0, "corruptBatches": 0,
            "resentBatches": 0}  # fmt: skip
    assert fold.patch["run"] == {
        "id": "run-1",
        "generation": 2,
        "specDigest": spec_digest(spec),
        "startedAt": "2026-01-01T12:00:00Z",
        "completedAt": None,
        "workers": 3,
        "nodes": 2,  # d-2 names no node
        "links": 0,
        "linksSharingNode": 0,
        "startTotals": zero,
        "throughputSamples": {"count": 1, "mean": 60e6, "m2": 0.0, "min": 60e6, "max": 60e6},
        "batchesPerSecondSamples": {"count": 1, "mean": 7.5, "m2": 0.0, "min": 7.5, "max": 7.5},
        "cpuSecondsPerGbSamples": {"count": 0, "mean": 0.0, "m2": 0.0, "min": 0.0, "max": 0.0},
        # Null in the merge patch: deletes what an earlier run (or set) stored there.
        "versions": None,
        "sample": None,
        "samples": None,
        "awaitingFreshWorkers": None,
    }
    assert fold.patch["runs"] == []


def test_no_run_starts_and_no_sample_is_taken_before_a_worker_is_ready() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    pods = [PodState("d-0", ready=False, ip="10.0.0.1")]
    fold = _fold(spec, _observe(pods, [_report("d-0", throughput_bytes_per_second=5e6)]))
    assert fold.patch["startedAt"] is None
    assert fold.patch["run"]["startedAt"] is None
    assert fold.patch["run"]["throughputSamples"]["count"] == 0


def test_a_fold_without_reports_takes_no_sample() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    fold = _fold(
        spec, _observe(_ready("d-0"), [Fetched("d-0", error=FetchError.UNREACHABLE)]), _started(30)
    )
    assert fold.patch["run"]["throughputSamples"]["count"] == 0
    assert fold.patch["run"]["batchesPerSecondSamples"]["count"] == 0
    assert fold.patch["reporting"] == {
        "foldedAt": "2026-01-01T12:00:00.000Z",
        "workersReporting": 0,
        "workersFailing": 1,
        "oldestReportAt": "",
    }


def _samples(*values: float) -> SampleStats:
    stats = SampleStats()
    for value in values:
        stats = stats.add(value)
    return stats


def test_a_spec_change_closes_the_run_with_its_own_figures_in_full() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 3, "statusIntervalSeconds": 10})
    start = Totals(batches=100, raw_bytes=1_000, wire_bytes=400, lost_batches=1)
    published = Totals(batches=10_126, raw_bytes=100_261_000, wire_bytes=50_130_400, lost_batches=3)
    status = _started(
        100,
        spec_digest="0123456789ab",
        workers=3,
        nodes=2,
        start_totals=start,
        throughput_samples=_samples(100.04, 100.27, 100.13),
        batches_per_second_samples=_samples(10.06, 10.5),
    ).model_copy(update={"spread": Spread(min_bytes_per_second=1.5, max_bytes_per_second=3.5)})
    changed = _fold(
        spec,
        _observe(_ready("d-0"), generation=3, applied=3, now=NOW + timedelta(seconds=0.26)),
        status=status,
        ledger=Ledger.from_status(Totals(), published),
    )
    (closed,) = changed.patch["runs"]
    assert closed == {
        "id": "run-1",
        "generation": 2,
        "specDigest": "0123456789ab",
        "outcome": "SpecChanged",
        "startedAt": "2026-01-01T11:58:20Z",
        "completedAt": "2026-01-01T12:00:00Z",
        "seconds": 100.3,  # 100.26 s
        "workers": 3,
        "nodes": 2,
        "links": 0,
        "linksSharingNode": 0,
        "throughputBytesPerSecond": 1e6,  # 100,260,000 bytes in 100.26 s
        "wireBytesPerSecond": 5e5,
        "batchesPerSecond": 100.0,
        "compressionRatio": 2.0,
        "totals": {"batches": 10_026, "rawBytes": 100_260_000, "wireBytes": 50_130_000,
                   "lostBatches": 2, "corruptBatches": 0, "resentBatches": 0},
        "spread": {"minBytesPerSecond": 1.5, "p50BytesPerSecond": 0, "maxBytesPerSecond": 3.5},
        # mean 100.1467, ci95 0.2879 (t(2) = 4.303), rounded to a tenth
        "throughput": {"mean": 100.1, "ci95": 0.3, "min": 100.0, "max": 100.3, "samples": 3},
        "batches": {"mean": 10.3, "ci95": 2.8, "min": 10.1, "max": 10.5, "samples": 2},
        "cpuSecondsPerGb": {"mean": 0.0, "ci95": 0.0, "min": 0.0, "max": 0.0, "samples": 0},
        # A run closed by a spec change is not judged.
        "expectations": [],
        "passed": None,
    }  # fmt: skip
    fresh = changed.patch["run"]
    assert (fresh["id"], fresh["generation"], fresh["specDigest"]) == (
        "run-2",
        3,
        spec_digest(spec),
    )
    assert fresh["startTotals"]["rawBytes"] == 100_261_000


def test_a_run_with_an_unreadable_start_closes_with_no_length() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    status = _started(100).model_copy(
        update={"run": RunState(id="run-1", generation=2, started_at="not a time")}
    )
    published = Totals(batches=5, raw_bytes=3_000, wire_bytes=1_000)
    changed = _fold(
        spec,
        _observe(_ready("d-0"), generation=3, applied=3),
        status=status,
        ledger=Ledger.from_status(Totals(), published),
    )
    (closed,) = changed.patch["runs"]
    assert closed["seconds"] == 0.0
    assert closed["throughputBytesPerSecond"] == 3_000.0  # its counters over one second
    assert closed["completedAt"] == "2026-01-01T12:00:00Z"


def test_a_completed_run_summary_and_patch_in_full() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    status = _started(
        61,
        workers=1,
        nodes=1,
        throughput_samples=_samples(4e6, 6e6),
        batches_per_second_samples=_samples(40.0, 60.0),
    ).model_copy(update={"spread": Spread(min_bytes_per_second=5e6, max_bytes_per_second=5e6)})
    final = _report(
        "d-0",
        node="n1",
        finished=True,
        throughput_bytes_per_second=1.0,
        network_seconds=9.9,
        batches=3_000,
        raw_bytes=300_000_000,
        wire_bytes=100_000_000,
    )
    fold = _fold(spec, _observe(_ready("d-0"), [final]), status)
    assert fold.completed
    for live_only in ("networkSeconds", "compressionSeconds", "memoryBytes", "spread"):
        assert live_only not in fold.patch  # the last live figures stay as they were
    assert fold.patch["run"]["completedAt"] == "2026-01-01T12:00:00Z"
    assert fold.patch["run"]["throughputSamples"]["count"] == 2  # the final fold adds none
    (summary,) = fold.patch["runs"]
    assert summary == {
        "id": "run-1",
        "generation": 2,
        "specDigest": "",
        "outcome": "Completed",
        "startedAt": "2026-01-01T11:58:59Z",
        "completedAt": "2026-01-01T12:00:00Z",
        "seconds": 60.0,
        "workers": 1,
        "nodes": 1,
        "links": 0,
        "linksSharingNode": 0,
        "throughputBytesPerSecond": 5e6,
        "wireBytesPerSecond": 1_666_666.7,
        "batchesPerSecond": 50.0,
        "compressionRatio": 3.0,
        "totals": {"batches": 3_000, "rawBytes": 300_000_000, "wireBytes": 100_000_000,
                   "lostBatches": 0, "corruptBatches": 0, "resentBatches": 0},
        "spread": {"minBytesPerSecond": 5e6, "p50BytesPerSecond": 0, "maxBytesPerSecond": 5e6},
        "throughput": {"mean": 5e6, "ci95": 12706000.0, "min": 4e6, "max": 6e6, "samples": 2},
        "batches": {"mean": 50.0, "ci95": 127.1, "min": 40.0, "max": 60.0, "samples": 2},
        "cpuSecondsPerGb": {"mean": 0.0, "ci95": 0.0, "min": 0.0, "max": 0.0, "samples": 0},
        "expectations": [
            {"expectation": "maxLostBatches", "expected": 0.0, "actual": 0.0, "passed": True},
        ],
        "passed": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("seconds_after_end", "completed"),
    [(0.0, True), (-1.0, False)],
)
def test_a_run_whose_workers_all_finished_completes_exactly_at_its_end(
    seconds_after_end: float, completed: bool
) -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    fold = _fold(
        spec,
        _observe(_ready("d-0"), [_report("d-0", finished=True)]),
        _started(60 + seconds_after_end),
    )
    assert fold.completed is completed


@pytest.mark.parametrize(
    ("seconds_after_end", "completed"),
    # grace: 3 intervals of 5 s, plus 2 s
    [(16.0, False), (16.9, False), (17.0, True)],
)
def test_silent_workers_complete_the_run_after_exactly_the_grace(
    seconds_after_end: float, completed: bool
) -> None:
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    now = NOW + timedelta(seconds=seconds_after_end - 16)  # the run ended 16 s before NOW
    fold = _fold(
        spec,
        _observe(_ready("d-0"), [Fetched("d-0", error=FetchError.UNREACHABLE)], now=now),
        _started(60 + 16),
        heard={},
    )
    assert fold.completed is completed


def test_run_ids_count_on_from_the_highest_run_n_and_ignore_other_names() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 1})
    runs = [RunSummary(id=name, outcome="Completed") for name in ("run-3", "bench-7", "run-x")]
    status = CompressionClusterStatus(
        run=RunState(id="my-run-9", generation=1, completed_at="done"), runs=runs
    )
    fold = _fold(spec, _observe(_ready("d-0")), status=status)
    assert fold.patch["run"]["id"] == "run-4"


def test_the_patch_is_plain_json_data() -> None:
    """kopf sends the patch as JSON and logs it; no enum member or model may leak into it."""
    spec = CompressionClusterSpec.model_validate({"workers": 3, "duration": "60s"})
    fetched = [
        _report("d-0", finished=True, throughput_bytes_per_second=1e6),
        _report("d-1", finished=True, throughput_bytes_per_second=2e6),
        Fetched("d-2", error=FetchError.BAD_REPORT, message="unsigned"),
    ]
    fold = _fold(spec, _observe(_ready("d-0", "d-1", "d-2"), fetched), _started(100))
    assert [item["outcome"] for item in fold.patch["runs"]] == ["Completed"]
    assert [item["reason"] for item in fold.patch["notableWorkers"]] == [
        "BadReport",
        "Slowest",
        "Slowest",
    ]

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(type(key) is str and plain(item) for key, item in value.items())
        if isinstance(value, list):
            return all(plain(item) for item in value)
        return type(value) in (str, int, float, bool, type(None))

    assert plain(fold.patch)
    assert yaml.safe_load(yaml.safe_dump(fold.patch)) == fold.patch


def test_status_times_are_utc_whatever_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")  # POSIX: 5 h 30 min east of UTC
    time.tzset()
    try:
        spec = CompressionClusterSpec.model_validate({"workers": 1})
        fold = _fold(spec, _observe(_ready("d-0"), [_report("d-0", seconds_ago=0.25)]))
        assert fold.patch["startedAt"] == "2026-01-01T12:00:00Z"
        assert fold.patch["reporting"]["foldedAt"] == "2026-01-01T12:00:00.000Z"
        assert fold.patch["reporting"]["oldestReportAt"] == "2026-01-01T11:59:59.750Z"
        assert parse_time("2026-01-01T12:00:00") == NOW  # no zone: UTC, not local time
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_time_keeps_the_instant_of_any_offset() -> None:
    assert parse_time("2026-01-01T12:00:00Z") == NOW
    assert parse_time("2026-01-01T13:30:00+01:30") == NOW
    assert parse_time("2026-01-01T12:00:00") == NOW
    assert parse_time("2026-01-01T12:00:00").tzinfo is not None  # type: ignore[union-attr]
    assert parse_time("") is None
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


def test_an_unreadable_status_keeps_its_generation_and_start() -> None:
    broken = parse_status(
        {"observedGeneration": 3, "startedAt": "2026-01-01T11:00:00Z", "runs": "many"}
    )
    assert broken.observed_generation == 3
    assert broken.started_at == "2026-01-01T11:00:00Z"
    assert broken.runs == []


def test_spec_digest_is_12_hex_digits_stable_and_tells_specs_apart() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    digest = spec_digest(spec)
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert spec_digest(CompressionClusterSpec.model_validate({"workers": 2})) == digest
    assert spec_digest(CompressionClusterSpec.model_validate({"workers": 3})) != digest


def test_a_run_that_misses_min_throughput_is_not_passed_naming_it_and_both_figures() -> None:
    spec = CompressionClusterSpec.model_validate(
        {
            "workers": 1,
            "duration": "60s",
            "statusIntervalSeconds": 5,
            "expect": {"minThroughputBytesPerSecond": 3e8, "minCompressionRatio": 2},
        }
    )
    status = _started(61).model_copy(update={"phase": Phase.RUNNING})
    final = _report(
        "d-0", finished=True, batches=3_000, raw_bytes=300_000_000, wire_bytes=100_000_000
    )
    fold = _fold(spec, _observe(_ready("d-0"), [final]), status)
    assert fold.completed
    passed = _conditions(fold.patch)["Passed"]
    assert (passed["status"], passed["reason"]) == ("False", "ExpectationMissed")
    # 300 MB over 60 s is 5 MB/s: the minimum and the figure are both named.
    assert passed["message"] == (
        "run-1: missed minThroughputBytesPerSecond: expected >= 3e+08, measured 5e+06"
    )
    (summary,) = fold.patch["runs"]
    assert summary["passed"] is False
    assert [(item["expectation"], item["passed"]) for item in summary["expectations"]] == [
        ("minThroughputBytesPerSecond", False),
        ("minCompressionRatio", True),
        ("maxLostBatches", True),
    ]
    (event,) = [item for item in fold.events if item.reason == "ExpectationMissed"]
    assert event.type == "Warning"
    assert "minThroughputBytesPerSecond" in event.message
    # The verdict stays while that run is the cluster's run (later folds re-judge nothing).
    later = completed_status(spec, _apply(status, fold.patch), _observe(_ready("d-0"), []))
    kept = {item.type: item for item in later.conditions}
    assert kept["Passed"].status == "False"
    assert kept["Passed"].message == passed["message"]


def test_cpu_per_gb_is_the_workers_weighted_by_what_they_received() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2})
    fetched = [
        _report("d-0", throughput_bytes_per_second=30e6, cpu_seconds_per_gb=10.0),
        _report("d-1", throughput_bytes_per_second=10e6, cpu_seconds_per_gb=2.0),
    ]
    fold = _fold(spec, _observe(_ready("d-0", "d-1"), fetched))
    assert fold.patch["cpuSecondsPerGb"] == 8.0  # (10 * 30 + 2 * 10) / 40
    assert fold.patch["run"]["cpuSecondsPerGbSamples"]["mean"] == 8.0


def test_a_run_keeps_the_versions_its_workers_report() -> None:
    """A finished run's workers are gone when it is read: what they ran stays with it."""
    spec = CompressionClusterSpec.model_validate(
        {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5}
    )
    ran = {"w5xde": "0.1.0", "zstandard": "0.25.0", "libzstd": "1.5.7",
           "openssl": "OpenSSL 3.0.17", "python": "3.11.7", "kernel": "6.1.0",
           "future": "kept out, not refused"}  # fmt: skip
    figures = {"raw_bytes": 600_000_000, "wire_bytes": 200_000_000, "batches": 6000}
    report = _report("d-0", finished=True, **figures)
    report = Fetched(
        "d-0",
        report=report.report.model_copy(update={"versions": SoftwareVersions.model_validate(ran)}),
    )
    fold = _fold(spec, _observe(_ready("d-0"), [report]), _started(61))
    (summary,) = fold.patch["runs"]
    assert summary["versions"]["libzstd"] == "1.5.7"
    assert summary["versions"]["openssl"] == "OpenSSL 3.0.17"
    assert "future" not in summary["versions"]
