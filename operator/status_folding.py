"""Folds what the operator sees of a cluster, and its workers' reports, into `status`.

Pure: an observation and the ledger in, a typed status out whose set fields are the
patch (`api.v1alpha1.status_patch` writes them), plus the Events worth telling users
and the ledger after this fold.  The status stays the same size whatever the worker
count: per-worker figures are summarised as a spread and at most ten notable workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.api.reasons import EventType, Reason
from w5xde.api.v1alpha1 import (
    MAX_KEPT_RUNS,
    MAX_NOTABLE_WORKERS,
    PROBLEM_LINK_STATES,
    CompressionClusterSpec,
    CompressionClusterStatus,
    LinksStatus,
    NotableLinkReason,
    NotableReason,
    NotableWorker,
    Phase,
    ReportingStatus,
    RunOutcome,
    RunState,
    RunSummary,
    SampleSetStatus,
    SoftwareVersions,
    Spread,
    Totals,
    parse_duration,
    parse_status,
    status_patch,
)
from w5xde.contract import results
from w5xde.contract.figures import (
    ClusterFigures,
    fold_reports,
    format_throughput,
    minus_floored,
    run_averages,
)
from w5xde.contract.link_figures import LinkRow, link_rows, links_status
from w5xde.contract.report import WorkerReport
from w5xde.operator.conditions import merge_conditions
from w5xde.operator.expectations import passed_conditions, passed_events
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Event,
    Fetched,
    FetchError,
    Observation,
    PodState,
    Problem,
)
from w5xde.operator.runs import (
    COMPLETION_GRACE_SECONDS,
    STALE_AFTER_INTERVALS,
    current_run,
    interval_of,
    isoformat,
    parse_time,
    run_ended,
    run_is_over,
    spec_digest,
    summarize_run,
)
from w5xde.operator.sample_sets import (
    fresh_workers_ready,
    next_sample,
    record_sample,
    samples_left,
    starting_set,
)
from w5xde.operator.status_conditions import (
    RUN_PROBLEMS,
    Situation,
    conditions_of,
    events_of,
    had_links_condition,
    names,
    phase_of,
)

__all__ = [
    "COMPLETION_GRACE_SECONDS",
    "STALE_AFTER_INTERVALS",
    "Fold",
    "completed_status",
    "fold_status",
    "interval_of",
    "isoformat",
    "notable_workers",
    "parse_status",
    "parse_time",
    "spec_digest",
    "summarize_run",
]

#: A worker whose container restarted is notable (`Restarted`) for this long at least
#: (3 intervals when those are longer), so a person looking a little later still sees it.
RESTART_NOTABLE_SECONDS = 60.0
#: How many of the slowest workers `notableWorkers` names when room is left.
SLOWEST_LISTED = 3
#: Phases in which the run had all its workers up (a worker going does not undo that).
_RUNNING_PHASES = frozenset({Phase.RUNNING, Phase.DEGRADED, Phase.COMPLETING})


@dataclass(frozen=True)
class Fold:
    #: The fields this fold writes are the fields set on it (`status_patch`).
    status: CompressionClusterStatus
    ledger: Ledger
    events: tuple[Event, ...] = ()
    completed: bool = False
    stale_workers: tuple[str, ...] = ()

    @property
    def patch(self) -> dict[str, Any]:
        """The JSON merge patch of `status`."""
        return status_patch(self.status)


def precise_isoformat(moment: datetime) -> str:
    """RFC 3339 with milliseconds: report ages are measured in fractions of a second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch_isoformat(seconds: float) -> str:
    return precise_isoformat(datetime.fromtimestamp(seconds, UTC))


def is_stale(last_heard: float | None, now: datetime, interval_seconds: float) -> bool:
    """No report since `last_heard` (epoch seconds: the last report, or first sight)."""
    if last_heard is None:
        return False
    return now.timestamp() - last_heard > STALE_AFTER_INTERVALS * interval_seconds


@dataclass(frozen=True)
class _Workers:
    """What one fold knows of the workers (only those with a pod now)."""

    pods: dict[str, PodState]
    reports: list[WorkerReport]
    failures: list[Fetched]
    stale: list[str]
    ready: int


def _workers(
    spec: CompressionClusterSpec, observation: Observation, last_heard: Mapping[str, float]
) -> _Workers:
    pods = {pod.name: pod for pod in observation.pods}
    interval = float(spec.status_interval_seconds)
    reports = [f.report for f in observation.fetched if f.report is not None and f.name in pods]
    reported = {report.name for report in reports}
    stale = sorted(
        name
        for name, pod in pods.items()
        if pod.ip
        and name not in reported
        and is_stale(last_heard.get(name), observation.now, interval)
    )
    return _Workers(
        pods=pods,
        reports=reports,
        failures=[f for f in observation.fetched if f.report is None and f.name in pods],
        stale=stale,
        ready=sum(1 for pod in pods.values() if pod.ready and pod.name not in stale),
    )


def _newly_restarted(
    pods: Sequence[PodState],
    status: CompressionClusterStatus,
    restarts_before: Mapping[str, int] | None,
) -> list[PodState]:
    """The pods that restarted since the previous fold: their restart count moved; or,
    without the counts, their last container ended after the previous fold (the
    kubelet's `finishedAt` is whole seconds, so one second of slack)."""
    if restarts_before is not None:
        return [pod for pod in pods if pod.restarts > restarts_before.get(pod.name, pod.restarts)]
    previous = parse_time(status.reporting.folded_at)
    return _restarted_since(pods, previous - timedelta(seconds=1) if previous else None)


def _restarted_since(pods: Sequence[PodState], moment: datetime | None) -> list[PodState]:
    if moment is None:
        return []
    since = moment.timestamp()
    return [pod for pod in pods if pod.last_restart_at is not None and pod.last_restart_at > since]


def _advance_run(
    spec: CompressionClusterSpec,
    run: RunState,
    workers: _Workers,
    *,
    figures: ClusterFigures,
    links: LinksStatus,
    now: datetime,
) -> RunState:
    """The run with this fold's start, high-water marks and samples (none while the
    previous sample's workers are still going: they are not this run's)."""
    if run.awaiting_fresh_workers:
        return run
    started_at = run.started_at
    if started_at is None and workers.ready > 0:
        started_at = isoformat(now)
    reports = workers.reports
    run = run.model_copy(
        update={
            "started_at": started_at,
            "workers": max(run.workers, len(reports)),
            "nodes": max(run.nodes, len({report.node for report in reports if report.node})),
            "links": max(run.links, links.links),
            "links_sharing_node": max(run.links_sharing_node, links.sharing_node),
            "versions": run.versions or _reported_versions(reports),
        }
    )
    if (
        started_at is not None
        and reports
        and not run_is_over(spec, run, now, reports, workers.pods)
    ):
        run = run.model_copy(
            update={
                "throughput_samples": run.throughput_samples.add(
                    figures.throughput_bytes_per_second
                ),
                "batches_per_second_samples": run.batches_per_second_samples.add(
                    figures.batches_per_second
                ),
            }
        )
        if figures.cpu_seconds_per_gb > 0:  # an interval in which data arrived
            run = run.model_copy(
                update={
                    "cpu_seconds_per_gb_samples": run.cpu_seconds_per_gb_samples.add(
                        figures.cpu_seconds_per_gb
                    )
                }
            )
    return run


def _reported_versions(reports: Sequence[WorkerReport]) -> SoftwareVersions | None:
    """The versions the first reporting worker ran (one image per cluster)."""
    for report in reports:
        if report.versions is not None:
            return SoftwareVersions.model_validate(report.versions.model_dump())
    return None


def _links_problem(rows: Sequence[LinkRow], links: LinksStatus) -> Problem | None:
    """Links that do not flow, as their senders judge them (`Stalled`, `Unreachable`,
    `Refused` each already waited out the worker's deadline; a link still `Connecting`,
    as peers come up one by one at a start, is no problem yet)."""
    bad = [row for row in rows if row.state in PROBLEM_LINK_STATES]
    if not bad:
        return None
    named = [f"{row.sender}->{row.receiver} {row.state} {row.state_seconds:.0f} s" for row in bad]
    return Problem(
        Reason.LINKS_STALLED,
        f"{len(bad)} of {links.links} links not flowing ({links.stalled} stalled,"
        f" {links.unreachable} unreachable, {links.refused} refused): {names(named)}",
    )


def _problems(
    observation: Observation, stale: Sequence[str], links_problem: Problem | None
) -> list[Problem]:
    problems = list(observation.problems)
    problems.extend(
        Problem(Reason.WORKER_CANNOT_RUN, f"{pod.name}: {pod.problem}")
        for pod in observation.pods
        if pod.problem
    )
    if stale:
        problems.append(
            Problem(
                Reason.WORKERS_STALE,
                f"no report for {STALE_AFTER_INTERVALS} intervals from: {names(stale)}",
            )
        )
    if links_problem is not None:
        problems.append(links_problem)
    return problems


def _close(
    spec: CompressionClusterSpec, run: RunState, totals: Totals, spread: Spread, now: datetime
) -> tuple[RunState, ClusterFigures, RunSummary]:
    """A bounded run at its end: its own counters averaged over `duration` (only the time
    traffic was meant to flow), and its summary."""
    seconds = parse_duration(spec.duration) or 1.0
    figures = run_averages(minus_floored(totals, run.start_totals), seconds)
    run = run.model_copy(update={"completed_at": isoformat(now)})
    summary = summarize_run(run, RunOutcome.COMPLETED, figures, spread, seconds)
    return run, figures, results.judge(summary, spec.expect)


def _settled(links: LinksStatus) -> LinksStatus:
    """A finished run's links: its last live figures, without link states that were a
    problem only while it ran (a finished run has no stalled link)."""
    problems = {NotableLinkReason(state.value) for state in PROBLEM_LINK_STATES}
    return links.model_copy(
        update={
            "stalled": 0,
            "unreachable": 0,
            "refused": 0,
            "notable": [item for item in links.notable if item.reason not in problems],
        }
    )


def _situation(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
    workers: _Workers,
    *,
    restarted: Sequence[PodState],
    links_problem: Problem | None,
    completed: bool,
    completing: bool,
    was_running: bool,
    next_sample_message: str = "",
    awaiting_fresh_workers: bool = False,
) -> Situation:
    problems = _problems(observation, workers.stale, links_problem)
    if completed or awaiting_fresh_workers:
        # The run's workers are done: only what follows from the spec stays.
        problems = [problem for problem in problems if problem.reason not in RUN_PROBLEMS]
    lost = {*workers.stale, *(pod.name for pod in restarted if not pod.ready)} & set(workers.pods)
    return Situation(
        spec=spec,
        observation=observation,
        ready_workers=workers.ready,
        problems=tuple(problems),
        completed=completed,
        completing=completing,
        was_running=was_running,
        lost=tuple(sorted(lost)),
        links_problem=links_problem,
        links_condition=had_links_condition(status),
        next_sample=next_sample_message,
    )


def _current_set(status: CompressionClusterStatus, run: RunState) -> SampleSetStatus | None:
    """The sample set this run belongs to (None when the run is no set)."""
    if run.samples <= 1:
        return None
    if run.sample > 1 and status.samples is not None:
        return status.samples
    return starting_set(run)


def _between_samples(run: RunState) -> str:
    """What `Progressing` says while a further sample waits for its workers ("" when
    the run is a first sample, or has started)."""
    if run.sample <= 1 or run.started_at is not None:
        return ""
    if run.awaiting_fresh_workers:
        return (
            f"sample {run.sample - 1} of {run.samples} completed: waiting for its workers"
            f" to go before sample {run.sample} ({run.id})"
        )
    return f"starting sample {run.sample} of {run.samples} ({run.id}) with fresh workers"


def fold_status(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
    ledger: Ledger,
    last_heard: Mapping[str, float],
    *,
    restarts_before: Mapping[str, int] | None = None,
) -> Fold:
    """The status for one look at the cluster.  `last_heard`: when each pod's report last
    came (or the pod was first seen); `restarts_before`: see `_newly_restarted`."""
    now = observation.now
    interval = float(spec.status_interval_seconds)
    workers = _workers(spec, observation, last_heard)
    published_before = ledger.totals
    ledger = ledger.advance(workers.reports, workers.pods.keys())

    run, kept = current_run(spec, status, observation, published_before)
    run = fresh_workers_ready(run, workers.pods)
    was_running = _was_running(status, run)
    figures = fold_reports(workers.reports)
    rows = link_rows(workers.reports, {name: pod.node for name, pod in workers.pods.items()})
    links = links_status(rows)
    run = _advance_run(spec, run, workers, figures=figures, links=links, now=now)
    completed = run_is_over(spec, run, now, workers.reports, workers.pods)
    sample_set = _current_set(status, run)
    sample_done: RunSummary | None = None  # a sample completed and another follows
    if completed:
        run, figures, closed = _close(spec, run, ledger.totals, status.spread, now)
        kept.append(closed)
        if run.samples > 1:
            sample_set = record_sample(sample_set, run, closed)
        if samples_left(run):
            sample_done, completed = closed, False
            run = next_sample(run, kept, ledger.totals)
    settled = completed or sample_done is not None

    recently = now - timedelta(seconds=max(3 * interval, RESTART_NOTABLE_SECONDS))
    restarted = _restarted_since(observation.pods, recently)
    situation = _situation(
        spec,
        status,
        observation,
        workers,
        restarted=restarted,
        links_problem=None
        if settled or run.awaiting_fresh_workers
        else _links_problem(rows, links),
        completed=completed,
        completing=not completed and run_ended(spec, run, now),
        was_running=was_running,
        next_sample_message=_between_samples(run),
        awaiting_fresh_workers=run.awaiting_fresh_workers,
    )
    phase = phase_of(situation)
    generation = observation.applied_generation
    merged = merge_conditions(
        status.conditions,
        [
            *conditions_of(situation, phase),
            *passed_conditions(run, kept, generation, sample_set),
        ],
        isoformat(now),
    )
    folded = CompressionClusterStatus(
        phase=phase,
        ready=f"{workers.ready}/{spec.workers}",
        ready_workers=workers.ready,
        restart_count=sum(pod.restarts for pod in observation.pods),
        **_figures_fields(figures, settled),
        links=_settled(status.links) if settled else links,
        totals=ledger.totals,
        retired_totals=ledger.retired,
        notable_workers=notable_workers(
            workers.pods, workers.reports, workers.failures, workers.stale, restarted
        ),
        reporting=_reporting(now, workers),
        run=run,
        runs=kept[-MAX_KEPT_RUNS:],
        samples=sample_set,
        conditions=merged,
        started_at=run.started_at,
        completed_at=isoformat(now) if completed else None,
    )
    events = events_of(
        status,
        phase,
        situation,
        merged,
        newly_stale=_newly_stale(status, workers.stale, last_heard, interval),
        restarted=_newly_restarted(observation.pods, status, restarts_before),
    )
    if settled:
        events = (*events, *passed_events(kept[-1]))
    if sample_done is not None:
        events = (*events, _sample_event(sample_done, run))
    return Fold(folded, ledger, events, completed=completed, stale_workers=tuple(workers.stale))


def _sample_event(done: RunSummary, following: RunState) -> Event:
    return Event(
        EventType.NORMAL,
        Reason.SAMPLE_COMPLETED,
        f"{done.id}: sample {done.sample} of {done.samples} completed at"
        f" {format_throughput(done.throughput_bytes_per_second)}; sample {following.sample}"
        f" ({following.id}) starts with fresh workers",
    )


def _was_running(status: CompressionClusterStatus, run: RunState) -> bool:
    """The run of this fold had all its workers up before it (a worker going is then not
    a restart of the cluster)."""
    before = status.run
    return (
        run.id == before.id and before.started_at is not None and (status.phase in _RUNNING_PHASES)
    )


def completed_status(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
) -> CompressionClusterStatus:
    """What a fold writes after the run completed: READY follows the pods as they go,
    and the conditions are judged again (a finished run has no worker problems, so a
    Degraded left from its last moments clears); the figures are kept."""
    ready = sum(1 for pod in observation.pods if pod.ready)
    problems = tuple(p for p in observation.problems if p.reason not in RUN_PROBLEMS)
    situation = Situation(
        spec=spec,
        observation=observation,
        ready_workers=ready,
        problems=problems,
        completed=True,
        completing=False,
        was_running=False,
        links_condition=had_links_condition(status),
    )
    merged = merge_conditions(
        status.conditions,
        [
            *conditions_of(situation, Phase.COMPLETED),
            *passed_conditions(
                status.run, status.runs, observation.applied_generation, status.samples
            ),
        ],
        isoformat(observation.now),
    )
    return CompressionClusterStatus(
        ready=f"{ready}/{spec.workers}",
        ready_workers=ready,
        restart_count=sum(pod.restarts for pod in observation.pods),
        conditions=merged,
    )


def _reporting(now: datetime, workers: _Workers) -> ReportingStatus:
    reports = workers.reports
    return ReportingStatus(
        folded_at=precise_isoformat(now),
        workers_reporting=len(reports),
        workers_failing=len(workers.failures),
        oldest_report_at=(
            epoch_isoformat(min(report.generated_at for report in reports)) if reports else ""
        ),
    )


def _newly_stale(
    status: CompressionClusterStatus,
    stale: Sequence[str],
    last_heard: Mapping[str, float],
    interval_seconds: float,
) -> list[str]:
    """The stale workers that were not stale yet at the previous fold (its `foldedAt`),
    so each goes stale in one Event, whatever else made the cluster Degraded."""
    previous = parse_time(status.reporting.folded_at)
    if previous is None:
        return list(stale)
    return [
        name for name in stale if not is_stale(last_heard.get(name), previous, interval_seconds)
    ]


def _figures_fields(figures: ClusterFigures, completed: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "throughput": format_throughput(figures.throughput_bytes_per_second),
        "throughput_bytes_per_second": figures.throughput_bytes_per_second,
        "wire_bytes_per_second": figures.wire_bytes_per_second,
        "batches_per_second": figures.batches_per_second,
        "compression_ratio": figures.compression_ratio,
    }
    if not completed:  # a finished run keeps its last live per-worker figures
        fields.update(
            network_seconds=figures.network_seconds,
            compression_seconds=figures.compression_seconds,
            cpu_seconds_per_gb=figures.cpu_seconds_per_gb,
            compression_cpu_seconds_per_gb=figures.compression_cpu_seconds_per_gb,
            tls_cpu_seconds_per_gb=figures.tls_cpu_seconds_per_gb,
            memory_bytes=figures.memory_bytes,
            spread=figures.spread,
        )
    return fields


def notable_workers(
    pods: Mapping[str, PodState],
    reports: Sequence[WorkerReport],
    failures: Sequence[Fetched],
    stale: Sequence[str],
    restarted: Sequence[PodState] = (),
) -> list[NotableWorker]:
    """Failing, then stale, then recently restarted, then the slowest workers; never more
    than the bound.  `failures` and `reports` are of `pods` only (`fold_status` drops the
    others)."""
    listed: list[NotableWorker] = []
    for failure in sorted(failures, key=lambda item: item.name):
        reason = (
            NotableReason.BAD_REPORT
            if failure.error is FetchError.BAD_REPORT
            else NotableReason.UNREACHABLE
        )
        if failure.name in stale:
            reason = NotableReason.STALE
        listed.append(
            NotableWorker(
                name=failure.name,
                node=pods[failure.name].node,
                reason=reason,
                message=failure.message[:256],
            )
        )
    named = {item.name for item in listed}
    for pod in restarted:
        if pod.name not in named:
            message = f"{pod.restarts} restarts; the last container ended {pod.last_exit}"
            listed.append(
                NotableWorker(
                    name=pod.name,
                    node=pod.node,
                    reason=NotableReason.RESTARTED,
                    message=message[:256],
                )
            )
    room = MAX_NOTABLE_WORKERS - len(listed)
    if room > 0 and len(reports) > 1:
        named = {item.name for item in listed}  # each worker once, by its first reason
        slowest = sorted(
            (report for report in reports if report.name not in named),
            key=lambda r: (r.throughput_bytes_per_second, r.name),
        )
        for report in slowest[: min(room, SLOWEST_LISTED)]:
            listed.append(
                NotableWorker(
                    name=report.name,
                    node=report.node,
                    throughput_bytes_per_second=report.throughput_bytes_per_second,
                    reason=NotableReason.SLOWEST,
                )
            )
    return listed[:MAX_NOTABLE_WORKERS]
