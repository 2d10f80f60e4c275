"""Folding pulled reports: sums, ratio, spread, notable workers, retired runs, staleness,
phases and conditions; and the status stays bounded at 1,000 workers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from w5xde.api.v1alpha1 import (
    MAX_NOTABLE_WORKERS,
    CompressionClusterSpec,
    CompressionClusterStatus,
    RunState,
    RunSummary,
    Totals,
)
from w5xde.contract.figures import format_throughput
from w5xde.contract.report import WorkerReport
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Fetched,
    FetchError,
    Observation,
    PodState,
    Problem,
    StatefulSetState,
)
from w5xde.operator.status_folding import Fold, fold_status, isoformat, parse_status, spec_digest

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
    assert after.patch["retiredTotals"]["batches"] == 50


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
    assert [event.reason for event in fold.events] == ["Completed"]
    (summary,) = fold.patch["runs"]
    assert (summary["id"], summary["outcome"]) == ("run-1", "Completed")
    assert summary["throughputBytesPerSecond"] == 10e6
    assert summary["totals"]["batches"] == 6000

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
