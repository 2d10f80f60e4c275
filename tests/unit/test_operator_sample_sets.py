"""`spec.samples`: a completed sample begins the next with fresh workers; the set is
summarised and judged whole (operator/sample_sets.py, status_folding, expectations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    SAMPLES_NEED_DURATION,
    CompressionClusterSpec,
    CompressionClusterStatus,
    RunState,
    RunSummary,
    Totals,
)
from w5xde.contract import results
from w5xde.contract.report import WorkerReport
from w5xde.operator.apply import keeps_no_workers
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import Fetched, Observation, PodState, StatefulSetState
from w5xde.operator.runs import current_run, isoformat, spec_digest
from w5xde.operator.sample_sets import (
    fresh_workers_ready,
    next_run_id,
    next_sample,
    record_sample,
    wants_fresh_workers,
)
from w5xde.operator.status_folding import Fold, fold_status

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLLED = StatefulSetState(2, 2, 2, "r1", "r1", up_to_date=True)
SPEC = CompressionClusterSpec.model_validate(
    {"workers": 1, "duration": "60s", "statusIntervalSeconds": 5, "samples": 3}
)


def _observe(pods: list[PodState], fetched: list[Fetched] = ()) -> Observation:  # type: ignore[assignment]
    return Observation(
        now=NOW,
        generation=2,
        applied_generation=2,
        statefulset=ROLLED,
        pods=tuple(pods),
        fetched=tuple(fetched),
    )


def _final(raw_bytes: int, incarnation: str = "i1") -> Fetched:
    report = WorkerReport(
        name="d-0",
        generated_at=NOW.timestamp(),
        incarnation=incarnation,
        finished=True,
        batches=raw_bytes // 100_000,
        raw_bytes=raw_bytes,
        wire_bytes=raw_bytes // 2,
    )
    return Fetched("d-0", report=report)


def _fold(status: CompressionClusterStatus, observation: Observation, ledger: Ledger) -> Fold:
    heard = {pod.name: NOW.timestamp() for pod in observation.pods}
    return fold_status(SPEC, status, observation, ledger, heard)


def _running(run: RunState, **status: Any) -> CompressionClusterStatus:
    started = isoformat(NOW - timedelta(seconds=61))
    run = run.model_copy(update={"started_at": started, "generation": 2})
    return CompressionClusterStatus(observed_generation=2, run=run, started_at=started, **status)


def test_samples_above_one_need_a_bounded_run_naming_the_field_and_rule() -> None:
    with pytest.raises(ValidationError, match="samples: more than one sample repeats"):
        CompressionClusterSpec.model_validate({"samples": 2})
    assert SAMPLES_NEED_DURATION.startswith("samples:")
    for bad in (0, 21):
        with pytest.raises(ValidationError, match="samples"):
            CompressionClusterSpec.model_validate({"duration": "5s", "samples": bad})
    assert CompressionClusterSpec.model_validate({"samples": 1}).samples == 1


def test_samples_do_not_change_what_a_run_measures() -> None:
    one = CompressionClusterSpec.model_validate({"duration": "5s"})
    three = CompressionClusterSpec.model_validate({"duration": "5s", "samples": 3})
    assert spec_digest(one) == spec_digest(three)


def test_a_fresh_run_of_a_set_is_its_first_sample() -> None:
    status = CompressionClusterStatus(observed_generation=2)
    run, _ = current_run(SPEC, status, _observe([]), Totals())
    assert (run.id, run.sample, run.samples, run.awaiting_fresh_workers) == ("run-1", 1, 3, False)
    plain, _ = current_run(
        CompressionClusterSpec.model_validate({"duration": "5s"}), status, _observe([]), Totals()
    )
    # No set: the run reads as before sets existed; in the merge patch of `status.run`
    # the sample fields are null, so a previous set's stored values are deleted.
    written = plain.model_dump(by_alias=True)
    assert (written["sample"], written["samples"], written["awaitingFreshWorkers"]) == (
        None,
        None,
        None,
    )
    assert RunState.model_validate(written).samples == 1


def test_the_next_sample_has_a_new_id_and_a_fresh_baseline_and_waits_for_workers() -> None:
    run = RunState(id="run-4", generation=2, sample=1, samples=3, started_at="x")
    totals = Totals(batches=7, raw_bytes=700)
    following = next_sample(run, [], totals)
    assert (following.id, following.sample, following.samples) == ("run-5", 2, 3)
    assert following.start_totals == totals
    assert following.started_at is None
    assert following.awaiting_fresh_workers
    assert next_run_id(["run-9", "run-10", "other-99"]) == "run-11"
    assert fresh_workers_ready(following, ["d-0"]).awaiting_fresh_workers
    ready = fresh_workers_ready(following, [])
    assert not ready.awaiting_fresh_workers
    assert wants_fresh_workers(ready, 0)
    assert not wants_fresh_workers(ready, 2)  # already scaled up
    assert not wants_fresh_workers(following, 0)  # old pods still going


def test_a_completed_sample_begins_the_next_instead_of_completing() -> None:
    status = _running(RunState(id="run-1", sample=1, samples=3))
    fold = _fold(
        status,
        _observe([PodState("d-0", ready=True, ip="10.0.0.1")], [_final(600_000_000)]),
        Ledger(),
    )
    assert not fold.completed
    patch = fold.patch
    assert patch["phase"] == "Pending"
    assert patch["completedAt"] is None
    (first,) = patch["runs"]
    assert (first["id"], first["outcome"], first["sample"], first["samples"]) == (
        "run-1", "Completed", 1, 3,
    )  # fmt: skip
    assert first["throughputBytesPerSecond"] == 10e6
    assert patch["run"]["id"] == "run-2"
    assert patch["run"]["sample"] == 2
    assert patch["run"]["awaitingFreshWorkers"] is True
    assert patch["run"]["startTotals"]["rawBytes"] == 600_000_000
    progressing = {item["type"]: item for item in patch["conditions"]}["Progressing"]
    assert progressing["reason"] == "NextSample"
    assert "Passed" not in {item["type"] for item in patch["conditions"]}  # judged at the end
    assert patch["samples"]["completed"] == 1
    assert patch["samples"]["summary"]["throughputBytesPerSecond"]["mean"] == 10e6
    reasons = [event.reason for event in fold.events]
    assert "SampleCompleted" in reasons
    assert "Completed" not in reasons
    assert keeps_no_workers(
        CompressionClusterStatus.model_validate({**patch, "observedGeneration": 2}), 2
    )


def _sample_summary(run_id: str, sample: int, throughput: float, passed: bool) -> RunSummary:
    return RunSummary(
        id=run_id,
        outcome="Completed",
        sample=sample,
        samples=3,
        throughput_bytes_per_second=throughput,
        passed=passed,
    )


def test_the_set_is_summarised_like_w5xde_local_and_passes_only_when_every_sample_did() -> None:
    figures = [(1, 10e6, True), (2, 12e6, False), (3, 14e6, True)]
    sample_set = None
    for sample, throughput, passed in figures:
        run = RunState(id=f"run-{sample}", sample=sample, samples=3)
        summary = _sample_summary(f"run-{sample}", sample, throughput, passed)
        sample_set = record_sample(sample_set, run, summary)
        assert sample_set.passed is (None if sample < 3 else False)
    assert sample_set is not None
    assert (sample_set.id, sample_set.completed, sample_set.missed) == ("run-1", 3, ["run-2"])
    assert sample_set.run_ids == ["run-1", "run-2", "run-3"]
    local = results.summarize_samples(
        [
            results.RunResult(
                run_id=str(n),
                started_at="",
                completed_at="",
                outcome=results.Outcome.COMPLETE,
                versions=results.Versions(),
                figures=results.RunFigures(throughput_bytes_per_second=t),
            )
            for n, t, _ in figures
        ]
    )
    throughput = sample_set.summary.throughput_bytes_per_second
    assert throughput.model_dump() == local["throughputBytesPerSecond"].model_dump()
    assert (throughput.mean, throughput.min, throughput.max, throughput.samples) == (
        12e6, 10e6, 14e6, 3,
    )  # fmt: skip
    assert throughput.ci95 == pytest.approx(4.303 * 2e6 / 3**0.5, rel=1e-3)


def test_the_last_sample_completes_the_set_and_passed_judges_the_set() -> None:
    earlier = record_sample(
        None, RunState(id="run-1", sample=1, samples=3), _sample_summary("run-1", 1, 10e6, True)
    )
    earlier = record_sample(
        earlier, RunState(id="run-2", sample=2, samples=3), _sample_summary("run-2", 2, 12e6, False)
    )
    status = _running(RunState(id="run-3", sample=3, samples=3), samples=earlier)
    fold = _fold(
        status,
        _observe([PodState("d-0", ready=True, ip="10.0.0.1")], [_final(840_000_000)]),
        Ledger(),
    )
    assert fold.completed
    assert fold.patch["phase"] == "Completed"
    assert fold.patch["samples"]["completed"] == 3
    assert fold.patch["samples"]["passed"] is False
    passed = {item["type"]: item for item in fold.patch["conditions"]}["Passed"]
    assert (passed["status"], passed["reason"]) == ("False", "ExpectationMissed")
    assert "run-2" in passed["message"]


def test_between_samples_the_old_workers_are_awaited_then_the_next_sample_starts() -> None:
    following = RunState(id="run-2", generation=2, sample=2, samples=3, awaiting_fresh_workers=True)
    status = CompressionClusterStatus(observed_generation=2, run=following)
    going = _fold(
        status, _observe([PodState("d-0", ready=True, ip="10.0.0.1")], [_final(1)]), Ledger()
    )
    assert going.status.run.awaiting_fresh_workers
    assert going.status.run.started_at is None  # old (finished) workers start nothing
    gone = _fold(status, _observe([]), Ledger())
    assert not gone.status.run.awaiting_fresh_workers
    assert gone.patch["phase"] == "Pending"
    fresh = CompressionClusterStatus(observed_generation=2, run=gone.status.run)
    started = _fold(fresh, _observe([PodState("d-0", ready=True, ip="10.0.0.2")]), Ledger())
    assert started.status.run.started_at == isoformat(NOW)
    assert started.status.run.id == "run-2"
