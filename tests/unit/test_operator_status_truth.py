"""Issue 19's status truth, as pure fold rules: conditions judged again on every fold
(at completion and on recovery), restarts visible, the phase kept through a worker
restart, `Completing` at the end of a run, stalled links named, and a scale recorded
inside the run it belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    LinkState,
    ReportingStatus,
    RunState,
    parse_status,
    status_patch,
)
from w5xde.contract.report import LinkReport, WorkerReport
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Fetched,
    Observation,
    PodState,
    Problem,
    Reason,
    StatefulSetState,
)
from w5xde.operator.runs import spec_digest
from w5xde.operator.status_folding import Fold, completed_status, fold_status, isoformat

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ROLLED = StatefulSetState(2, 2, 2, "r1", "r1", up_to_date=True)


def _spec(**fields: Any) -> CompressionClusterSpec:
    return CompressionClusterSpec.model_validate(
        {"workers": 2, "statusIntervalSeconds": 10, **fields}
    )


def _pod(name: str, ready: bool = True, **extra: Any) -> PodState:
    return PodState(name, ready=ready, ip=f"10.0.0.{name[-1]}", node="n1", **extra)


def _report(name: str, links: list[LinkReport] = (), **figures: Any) -> Fetched:  # type: ignore[assignment]
    return Fetched(
        name,
        report=WorkerReport(
            name=name,
            incarnation="i1",
            generated_at=NOW.timestamp() - 1,
            links=list(links),
            **figures,
        ),
    )


def _fold(
    spec: CompressionClusterSpec,
    pods: list[PodState],
    fetched: list[Fetched],
    status: CompressionClusterStatus | None = None,
    now: datetime = NOW,
    generation: int = 2,
    **extra: Any,
) -> Fold:
    observation = Observation(
        now=now,
        generation=generation,
        applied_generation=generation,
        statefulset=ROLLED,
        pods=tuple(pods),
        fetched=tuple(fetched),
        **extra,
    )
    heard = {pod.name: now.timestamp() for pod in pods}
    return fold_status(spec, status or CompressionClusterStatus(), observation, Ledger(), heard)


def _after(status: CompressionClusterStatus, fold: Fold) -> CompressionClusterStatus:
    """The stored status after the fold's merge patch."""
    stored = status.model_dump(mode="json", by_alias=True)
    return parse_status({**stored, **status_patch(fold.status)})


def _condition(status: CompressionClusterStatus, kind: str) -> tuple[str, str]:
    found = next(item for item in status.conditions if item.type == kind)
    return (found.status.value, found.reason)


def _running(seconds_ago: float = 30, **run: Any) -> CompressionClusterStatus:
    started = isoformat(NOW - timedelta(seconds=seconds_ago))
    return CompressionClusterStatus(
        phase="Running",
        observed_generation=2,
        started_at=started,
        run=RunState(id="run-1", generation=2, started_at=started, **run),
    )


def test_one_worker_restarting_keeps_the_phase_and_is_named() -> None:
    spec = _spec()
    restarted_at = (NOW - timedelta(seconds=5)).timestamp()
    pods = [
        _pod("d-0"),
        _pod(
            "d-1",
            ready=False,
            restarts=1,
            last_restart_at=restarted_at,
            last_exit="Error (exit 137)",
        ),
    ]
    status = _running().model_copy(
        update={"reporting": ReportingStatus(folded_at=isoformat(NOW - timedelta(seconds=10)))}
    )
    fold = _fold(spec, pods, [_report("d-0"), _report("d-1")], status)
    after = fold.status
    assert after.phase == "Running"  # not Pending: the run is up, one worker restarts
    assert after.restart_count == 1
    assert _condition(after, "Progressing") == ("True", "WorkersLost")
    assert "d-1" in next(c for c in after.conditions if c.type == "Progressing").message
    (restarted,) = [item for item in after.notable_workers if item.name == "d-1"]
    assert restarted.reason == "Restarted"  # named once, not also among the slowest
    assert "exit 137" in restarted.message
    assert [event.reason for event in fold.events] == [Reason.WORKER_RESTARTED]
    # The next fold does not post the restart again.
    again = _fold(spec, pods, [_report("d-0"), _report("d-1")], _after(status, fold))
    assert Reason.WORKER_RESTARTED not in [event.reason for event in again.events]


def test_a_worker_that_never_ran_keeps_a_fresh_cluster_pending() -> None:
    fold = _fold(_spec(), [_pod("d-0"), _pod("d-1", ready=False)], [_report("d-0")])
    assert fold.status.phase == "Pending"
    assert _condition(fold.status, "Progressing") == ("True", "Starting")


def test_the_wind_down_after_the_deadline_is_completing_not_pending() -> None:
    spec = _spec(duration="60s")
    status = _running(seconds_ago=62)
    pods = [_pod("d-0", ready=False), _pod("d-1", ready=False)]
    fold = _fold(spec, pods, [_report("d-0", finished=True)], status)
    assert not fold.completed
    assert fold.status.phase == "Completing"
    assert _condition(fold.status, "Progressing") == ("True", "Completing")


def test_a_completed_cluster_with_no_current_problem_is_not_degraded() -> None:
    spec = _spec(duration="60s")
    status = _running(seconds_ago=61)
    stale_at = {"d-0": NOW.timestamp(), "d-1": NOW.timestamp() - 100}
    observation = Observation(
        now=NOW,
        generation=2,
        applied_generation=2,
        statefulset=ROLLED,
        pods=(_pod("d-0"), _pod("d-1")),
        fetched=(_report("d-0", finished=True),),
    )
    # d-1 went stale (its node went away) while the run was going.
    degraded = fold_status(spec, _running(seconds_ago=40), observation, Ledger(), stale_at).status
    assert _condition(degraded, "Degraded") == ("True", "WorkersStale")
    # At completion the run's worker problems are over: Degraded is judged again.
    done = fold_status(
        spec,
        status.model_copy(update={"conditions": degraded.conditions}),
        Observation(
            now=NOW + timedelta(seconds=60),
            generation=2,
            applied_generation=2,
            statefulset=ROLLED,
            pods=observation.pods,
            fetched=observation.fetched,
        ),
        Ledger(),
        stale_at,
    )
    assert done.completed
    assert _condition(done.status, "Degraded") == ("False", "AsSpecified")
    assert done.status.links == degraded.links  # no link problem to drop here: kept as is
    # ...and later folds of the completed cluster clear one left from before.
    kept = status.model_copy(update={"phase": "Completed", "conditions": degraded.conditions})
    later = completed_status(spec, kept, observation)
    assert _condition(later, "Degraded") == ("False", "AsSpecified")
    assert set(later.model_fields_set) == {
        "ready",
        "ready_workers",
        "restart_count",
        "conditions",
    }
    # A problem that follows from the spec stays.
    unsafe = Problem(Reason.UNSAFE_SYSCTLS, "network.sysctls: kernel.msgmax not safe")
    with_problem = Observation(
        now=NOW, generation=2, applied_generation=2, statefulset=ROLLED, pods=(), problems=(unsafe,)
    )
    assert _condition(completed_status(spec, kept, with_problem), "Degraded") == (
        "True",
        "UnsafeSysctls",
    )


def _link(peer: str, state: LinkState = LinkState.FLOWING, seconds: float = 0) -> LinkReport:
    return LinkReport(
        peer=peer,
        raw_bytes_per_second=0 if state is not LinkState.FLOWING else 1e6,
        state=state,
        state_seconds=seconds,
        state_message="no ACK progress" if state is not LinkState.FLOWING else "",
    )


def test_stalled_links_are_a_condition_with_counts_and_degrade_until_they_flow() -> None:
    spec = _spec()
    pods = [_pod("d-0"), _pod("d-1")]
    stalled = [
        _report("d-0", [_link("d-1", LinkState.STALLED, 45)]),
        _report("d-1", [_link("d-0")]),
    ]
    fold = _fold(spec, pods, stalled, _running())
    status = fold.status
    assert status.phase == "Degraded"  # not silently Running
    assert status.links.stalled == 1
    assert _condition(status, "LinksStalled") == ("True", "LinksStalled")
    message = next(c for c in status.conditions if c.type == "LinksStalled").message
    assert "1 of 2 links not flowing (1 stalled, 0 unreachable, 0 refused)" in message
    assert "d-0->d-1 Stalled 45 s" in message
    assert _condition(status, "Degraded") == ("True", "LinksStalled")
    assert Reason.LINKS_STALLED in [event.reason for event in fold.events]
    # Recovery: the condition stays, False, and Degraded clears.
    flowing = [_report("d-0", [_link("d-1")]), _report("d-1", [_link("d-0")])]
    recovered = _fold(spec, pods, flowing, _after(_running(), fold)).status
    assert recovered.phase == "Running"
    assert _condition(recovered, "LinksStalled") == ("False", "LinksFlowing")
    assert _condition(recovered, "Degraded") == ("False", "AsSpecified")


def test_a_link_still_connecting_is_not_a_problem_an_unreachable_one_is() -> None:
    spec = _spec()
    pods = [_pod("d-0"), _pod("d-1")]
    starting = [
        _report("d-0", [_link("d-1", LinkState.CONNECTING, 3)]),
        _report("d-1", [_link("d-0")]),
    ]
    fold = _fold(spec, pods, starting)
    assert fold.status.phase == "Running"
    assert all(c.type != "LinksStalled" for c in fold.status.conditions)
    later = [
        _report("d-0", [_link("d-1", LinkState.UNREACHABLE, 1)]),
        _report("d-1", [_link("d-0")]),
    ]
    assert _condition(_fold(spec, pods, later).status, "LinksStalled") == ("True", "LinksStalled")


def test_a_scale_within_a_run_keeps_its_id_start_and_deadline_and_is_recorded() -> None:
    spec = _spec(duration="120s")
    status = _running(seconds_ago=60, spec_digest=spec_digest(spec))
    scaled = _spec(duration="120s", workers=3)
    pods = [_pod("d-0"), _pod("d-1"), _pod("d-2", ready=False)]
    fold = _fold(scaled, pods, [_report("d-0"), _report("d-1")], status, generation=3)
    run = fold.status.run
    assert (run.id, run.started_at, run.generation) == ("run-1", status.run.started_at, 3)
    assert [(item.at, item.workers) for item in run.scales] == [(isoformat(NOW), 3)]
    assert fold.status.runs == []  # nothing closed
    assert fold.status.phase == "Running"  # the new worker is starting, the run goes on
    # Any other change closes the run and begins a new one, without the old scales.
    other = _spec(duration="120s", workers=3, statusIntervalSeconds=5)
    changed = _fold(other, pods, [_report("d-0")], _after(status, fold), generation=4)
    assert changed.status.run.id == "run-2"
    assert changed.status.run.scales == []
    assert status_patch(changed.status)["run"]["scales"] == []  # cleared in the stored status
    (closed,) = changed.status.runs
    assert closed.outcome == "SpecChanged"
    assert [item.workers for item in closed.scales] == [3]


def test_a_finished_run_keeps_its_last_links_without_the_stalled_ones() -> None:
    spec = _spec(duration="60s")
    pods = [_pod("d-0"), _pod("d-1")]
    live = _fold(
        spec,
        pods,
        [_report("d-0", [_link("d-1", LinkState.STALLED, 9)]), _report("d-1", [_link("d-0")])],
        _running(seconds_ago=55),
    )
    assert live.status.links.stalled == 1
    finished = [_report("d-0", finished=True), _report("d-1", finished=True)]
    done = _fold(
        spec, pods, finished, _after(_running(seconds_ago=55), live), now=NOW + timedelta(seconds=6)
    )
    assert done.completed
    assert done.status.links.links == 2  # the last live figures
    assert done.status.links.stalled == 0
    assert next(item.reason for item in live.status.links.notable) == "Stalled"
    assert "Stalled" not in [item.reason for item in done.status.links.notable]
    assert len(done.status.links.notable) == len(live.status.links.notable) - 1
    assert _condition(done.status, "LinksStalled") == ("False", "LinksFlowing")


def test_a_restart_is_one_event_when_its_count_moves() -> None:
    """The loop passes each pod's count at the previous fold: the kubelet's `finishedAt`
    is whole seconds, so a time comparison alone would miss restarts at short intervals."""
    spec = _spec(statusIntervalSeconds=1)
    restarted_at = float(int(NOW.timestamp()) - 1)  # before the previous fold, truncated
    pods = [_pod("d-0"), _pod("d-1", restarts=1, last_restart_at=restarted_at, last_exit="x")]
    status = _running().model_copy(
        update={"reporting": ReportingStatus(folded_at=isoformat(NOW - timedelta(seconds=0.5)))}
    )
    observation = Observation(
        now=NOW,
        generation=2,
        applied_generation=2,
        statefulset=ROLLED,
        pods=tuple(pods),
        fetched=(_report("d-0"), _report("d-1")),
    )
    heard = {pod.name: NOW.timestamp() for pod in pods}

    def events(before: dict[str, int]) -> list[str]:
        fold = fold_status(spec, status, observation, Ledger(), heard, restarts_before=before)
        return [event.reason for event in fold.events]

    assert events({"d-0": 0, "d-1": 0}) == [Reason.WORKER_RESTARTED]
    assert events({"d-0": 0, "d-1": 1}) == []  # already posted
    assert events({}) == []  # the first fold after a start: counts unknown, nothing posted
