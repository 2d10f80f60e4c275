"""Folds what the operator sees of a cluster, and its workers' reports, into `status`.

Pure: an observation and the ledger in, a JSON merge patch for `status` out (plus the
Events worth telling users and the ledger after this fold).  The status stays the
same size whatever the worker count: per-worker figures are summarised as a spread
and at most ten notable workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.api.v1alpha1 import (
    MAX_KEPT_RUNS,
    MAX_NOTABLE_WORKERS,
    CompressionClusterSpec,
    CompressionClusterStatus,
    ConditionType,
    Interval,
    NotableReason,
    NotableWorker,
    Phase,
    ReportingStatus,
    RunOutcome,
    RunState,
    RunSummary,
    Spread,
    Totals,
    parse_duration,
)
from w5xde.contract.figures import (
    ClusterFigures,
    fold_reports,
    format_throughput,
    minus_floored,
    run_averages,
)
from w5xde.contract.link_figures import link_rows, links_status
from w5xde.contract.report import WorkerReport
from w5xde.contract.statistics import SampleStats
from w5xde.operator.conditions import condition, is_true, merge_conditions
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import (
    Event,
    Fetched,
    FetchError,
    Observation,
    PodState,
    Problem,
    Reason,
)

#: A worker is stale after this many report intervals without a report.
STALE_AFTER_INTERVALS = 3
#: Extra seconds after a bounded run ends, so the workers' final reports arrive.
COMPLETION_GRACE_SECONDS = 2.0
#: How many of the slowest workers `notableWorkers` names when room is left.
SLOWEST_LISTED = 3


@dataclass(frozen=True)
class Fold:
    patch: dict[str, Any]
    ledger: Ledger
    events: tuple[Event, ...] = ()
    completed: bool = False
    stale_workers: tuple[str, ...] = ()


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def precise_isoformat(moment: datetime) -> str:
    """RFC 3339 with milliseconds: report ages are measured in fractions of a second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch_isoformat(seconds: float) -> str:
    return precise_isoformat(datetime.fromtimestamp(seconds, UTC))


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)  # reads "Z" too (Python 3.11+)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_stale(last_heard: float | None, now: datetime, interval_seconds: float) -> bool:
    """No report since `last_heard` (epoch seconds: the last report, or first sight)."""
    if last_heard is None:
        return False
    return now.timestamp() - last_heard > STALE_AFTER_INTERVALS * interval_seconds


def fold_status(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
    ledger: Ledger,
    last_heard: Mapping[str, float],
) -> Fold:
    """The status patch for one look at the cluster; `last_heard` maps each pod to when
    its report last arrived (or when the operator first saw the pod)."""
    now = observation.now
    pods = {pod.name: pod for pod in observation.pods}
    interval = float(spec.status_interval_seconds)

    reports = [f.report for f in observation.fetched if f.report is not None and f.name in pods]
    reported = {report.name for report in reports}
    failures = [f for f in observation.fetched if f.report is None and f.name in pods]
    stale = sorted(
        name
        for name, pod in pods.items()
        if pod.ip and name not in reported and is_stale(last_heard.get(name), now, interval)
    )
    ready_workers = sum(1 for pod in pods.values() if pod.ready and pod.name not in stale)
    published_before = ledger.totals
    ledger = ledger.advance(reports, pods.keys())

    run, kept = _current_run(spec, status, observation, published_before)
    started_at = run.started_at
    if started_at is None and ready_workers > 0:
        started_at = isoformat(now)
    completed = _run_is_over(spec, started_at, now, reports, pods)
    figures = fold_reports(reports)
    links = links_status(link_rows(reports, {name: pod.node for name, pod in pods.items()}))
    run = run.model_copy(
        update={
            "started_at": started_at,
            "workers": max(run.workers, len(reports)),
            "nodes": max(run.nodes, len({report.node for report in reports if report.node})),
            "links": max(run.links, links.links),
            "links_sharing_node": max(run.links_sharing_node, links.sharing_node),
        }
    )
    if started_at is not None and reports and not completed:
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
    if completed:
        seconds = parse_duration(spec.duration) or 1.0
        figures = run_averages(minus_floored(ledger.totals, run.start_totals), seconds)
        run = run.model_copy(update={"completed_at": isoformat(now)})
        kept.append(summarize_run(run, RunOutcome.COMPLETED, figures, status.spread, seconds))

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
                f"no report for {STALE_AFTER_INTERVALS} intervals from: {_names(stale)}",
            )
        )

    phase = _phase(spec, observation, ready_workers, problems, completed)
    conditions = _conditions(spec, observation, ready_workers, problems, phase)
    merged = merge_conditions(status.conditions, conditions, isoformat(now))
    newly_stale = _newly_stale(status, stale, last_heard, interval)

    patch: dict[str, Any] = {
        "phase": phase.value,
        "ready": f"{ready_workers}/{spec.workers}",
        "readyWorkers": ready_workers,
        **_figures_patch(figures, completed),
        **({} if completed else {"links": links.model_dump(mode="json", by_alias=True)}),
        "totals": ledger.totals.model_dump(mode="json", by_alias=True),
        "retiredTotals": ledger.retired.model_dump(mode="json", by_alias=True),
        "notableWorkers": [
            item.model_dump(mode="json", by_alias=True)
            for item in notable_workers(pods, reports, failures, stale)
        ],
        "reporting": ReportingStatus(
            folded_at=precise_isoformat(now),
            workers_reporting=len(reports),
            workers_failing=len(failures),
            oldest_report_at=(
                epoch_isoformat(min(report.generated_at for report in reports)) if reports else ""
            ),
        ).model_dump(mode="json", by_alias=True),
        "run": run.model_dump(mode="json", by_alias=True),
        "runs": [item.model_dump(mode="json", by_alias=True) for item in kept[-MAX_KEPT_RUNS:]],
        "conditions": [item.model_dump(mode="json", by_alias=True) for item in merged],
        "startedAt": started_at,
        "completedAt": isoformat(now) if completed else None,
    }
    events = _events(status, phase, problems, newly_stale, merged)
    return Fold(
        patch=patch, ledger=ledger, events=events, completed=completed, stale_workers=tuple(stale)
    )


def spec_digest(spec: CompressionClusterSpec) -> str:
    """12 hex digits of the spec: runs compare only when these match."""
    text = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _next_run_id(status: CompressionClusterStatus) -> str:
    numbers = [0]
    for run_id in [status.run.id, *(item.id for item in status.runs)]:
        prefix, _, number = run_id.rpartition("-")
        if prefix == "run" and number.isdigit():
            numbers.append(int(number))
    return f"run-{max(numbers) + 1}"


def _current_run(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
    published: Totals,
) -> tuple[RunState, list[RunSummary]]:
    """The run this fold belongs to, and the kept runs (the previous one closed if the
    applied spec changed under it)."""
    run = status.run
    kept = list(status.runs)
    if run.id and run.generation == observation.applied_generation:
        return run, kept
    if run.id and run.started_at and run.completed_at is None:
        started = parse_time(run.started_at)
        seconds = (observation.now - started).total_seconds() if started else 0.0
        figures = run_averages(minus_floored(published, run.start_totals), seconds)
        closed = run.model_copy(update={"completed_at": isoformat(observation.now)})
        kept.append(summarize_run(closed, RunOutcome.SPEC_CHANGED, figures, status.spread, seconds))
    fresh = RunState(
        id=_next_run_id(status),
        generation=observation.applied_generation,
        spec_digest=spec_digest(spec),
        start_totals=published,
    )
    return fresh, kept


def summarize_run(
    run: RunState, outcome: RunOutcome, figures: ClusterFigures, spread: Spread, seconds: float
) -> RunSummary:
    return RunSummary(
        id=run.id,
        generation=run.generation,
        spec_digest=run.spec_digest,
        outcome=outcome,
        started_at=run.started_at,
        completed_at=run.completed_at,
        seconds=round(seconds, 1),
        workers=run.workers,
        nodes=run.nodes,
        links=run.links,
        links_sharing_node=run.links_sharing_node,
        throughput_bytes_per_second=figures.throughput_bytes_per_second,
        wire_bytes_per_second=figures.wire_bytes_per_second,
        batches_per_second=figures.batches_per_second,
        compression_ratio=figures.compression_ratio,
        totals=figures.totals,
        spread=spread,
        throughput=interval_of(run.throughput_samples),
        batches=interval_of(run.batches_per_second_samples),
    )


def interval_of(samples: SampleStats) -> Interval:
    return Interval(
        mean=round(samples.mean, 1),
        ci95=round(samples.ci95, 1),
        min=round(samples.min, 1),
        max=round(samples.max, 1),
        samples=samples.count,
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


def _names(names: Sequence[str], shown: int = 10) -> str:
    listed = ", ".join(names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def _figures_patch(figures: ClusterFigures, completed: bool) -> dict[str, Any]:
    patch: dict[str, Any] = {
        "throughput": format_throughput(figures.throughput_bytes_per_second),
        "throughputBytesPerSecond": figures.throughput_bytes_per_second,
        "wireBytesPerSecond": figures.wire_bytes_per_second,
        "batchesPerSecond": figures.batches_per_second,
        "compressionRatio": figures.compression_ratio,
    }
    if not completed:  # a finished run keeps its last live per-worker figures
        patch.update(
            {
                "networkSeconds": figures.network_seconds,
                "compressionSeconds": figures.compression_seconds,
                "memoryBytes": figures.memory_bytes,
                "spread": figures.spread.model_dump(mode="json", by_alias=True),
            }
        )
    return patch


def notable_workers(
    pods: Mapping[str, PodState],
    reports: Sequence[WorkerReport],
    failures: Sequence[Fetched],
    stale: Sequence[str],
) -> list[NotableWorker]:
    """Failing, then stale, then the slowest workers; never more than the bound.
    `failures` and `reports` are of `pods` only (`fold_status` drops the others)."""
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
    room = MAX_NOTABLE_WORKERS - len(listed)
    if room > 0 and len(reports) > 1:
        slowest = sorted(reports, key=lambda r: (r.throughput_bytes_per_second, r.name))
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


def _run_is_over(
    spec: CompressionClusterSpec,
    started_at: str | None,
    now: datetime,
    reports: Sequence[WorkerReport],
    pods: Mapping[str, PodState],
) -> bool:
    """A bounded run is over once every worker says it finished (its final report is in),
    or, for workers that never say so, a few intervals after the run's end."""
    seconds = parse_duration(spec.duration)
    started = parse_time(started_at)
    if seconds is None or started is None:
        return False
    end = started + timedelta(seconds=seconds)
    if now < end:
        return False
    finished = {report.name for report in reports if report.finished}
    if pods and all(name in finished for name in pods):
        return True
    grace = STALE_AFTER_INTERVALS * spec.status_interval_seconds + COMPLETION_GRACE_SECONDS
    return now >= end + timedelta(seconds=grace)


def _phase(
    spec: CompressionClusterSpec,
    observation: Observation,
    ready_workers: int,
    problems: Sequence[Problem],
    completed: bool,
) -> Phase:
    if observation.fatal is not None:
        return Phase.FAILED
    if completed:
        return Phase.COMPLETED
    if problems:
        return Phase.DEGRADED
    if ready_workers >= spec.workers:
        return Phase.RUNNING
    return Phase.PENDING


def _conditions(
    spec: CompressionClusterSpec,
    observation: Observation,
    ready_workers: int,
    problems: Sequence[Problem],
    phase: Phase,
) -> list[Any]:
    generation = observation.applied_generation
    statefulset = observation.statefulset
    current = observation.applied_generation >= observation.generation
    rolled_out = statefulset is not None and statefulset.rolled_out
    all_ready = ready_workers >= spec.workers
    text = f"{ready_workers}/{spec.workers} workers ready"

    if phase is Phase.COMPLETED:
        ready = condition(
            ConditionType.READY, False, Reason.COMPLETED, "the run is over", generation
        )
        progressing = condition(
            ConditionType.PROGRESSING, False, Reason.COMPLETED, "the run is over", generation
        )
    else:
        ready_now = all_ready and rolled_out and current and observation.fatal is None
        ready = condition(
            ConditionType.READY,
            ready_now,
            Reason.WORKERS_READY if ready_now else Reason.WORKERS_NOT_READY,
            text,
            generation,
        )
        if not current or statefulset is None:
            progressing = condition(
                ConditionType.PROGRESSING, True, Reason.APPLYING, "applying the spec", generation
            )
        elif not statefulset.rolled_out:
            progressing = condition(
                ConditionType.PROGRESSING,
                True,
                Reason.ROLLING_OUT,
                "replacing worker pods",
                generation,
            )
        elif not all_ready:
            progressing = condition(
                ConditionType.PROGRESSING, True, Reason.STARTING, text, generation
            )
        else:
            progressing = condition(
                ConditionType.PROGRESSING,
                False,
                Reason.STABLE,
                "all workers up to date",
                generation,
            )
    if observation.fatal is not None:
        degraded = condition(
            ConditionType.DEGRADED,
            True,
            observation.fatal.reason,
            observation.fatal.message,
            generation,
        )
    elif problems:
        degraded = condition(
            ConditionType.DEGRADED,
            True,
            problems[0].reason,
            "; ".join(problem.message for problem in problems),
            generation,
        )
    else:
        degraded = condition(ConditionType.DEGRADED, False, Reason.AS_SPECIFIED, "", generation)
    if phase is Phase.COMPLETED:
        complete = condition(
            ConditionType.COMPLETE, True, Reason.RUN_FINISHED, "the bounded run is over", generation
        )
    else:
        complete = condition(
            ConditionType.COMPLETE,
            False,
            Reason.RUN_IN_PROGRESS if spec.duration else Reason.UNBOUNDED,
            f"runs for {spec.duration}" if spec.duration else "runs until deleted",
            generation,
        )
    if observation.fatal is not None:
        failed = condition(
            ConditionType.FAILED,
            True,
            observation.fatal.reason,
            observation.fatal.message,
            generation,
        )
    else:
        failed = condition(ConditionType.FAILED, False, Reason.AS_SPECIFIED, "", generation)
    return [ready, progressing, degraded, complete, failed]


def _events(
    status: CompressionClusterStatus,
    phase: Phase,
    problems: Sequence[Problem],
    newly_stale: Sequence[str],
    conditions: Sequence[Any],
) -> tuple[Event, ...]:
    events: list[Event] = []
    was_degraded = is_true(status.conditions, ConditionType.DEGRADED)
    if is_true(conditions, ConditionType.DEGRADED) and not was_degraded:
        message = "; ".join(problem.message for problem in problems) or "see status.conditions"
        reason = problems[0].reason if problems else "Degraded"
        events.append(Event("Warning", reason, message))
    if newly_stale and not events:
        events.append(
            Event(
                "Warning", Reason.WORKERS_STALE, f"no recent report from: {', '.join(newly_stale)}"
            )
        )
    if phase is not status.phase:
        if phase is Phase.RUNNING:
            events.append(Event("Normal", "Running", "all workers are ready"))
        elif phase is Phase.COMPLETED:
            events.append(
                Event("Normal", Reason.COMPLETED, "the bounded run is over; figures kept")
            )
    return tuple(events)


def parse_status(raw: Mapping[str, Any] | None) -> CompressionClusterStatus:
    """The stored status, tolerating fields this version does not know (kept, not parsed)."""
    if not raw:
        return CompressionClusterStatus()
    known = set(CompressionClusterStatus.model_fields) | {
        info.alias for info in CompressionClusterStatus.model_fields.values() if info.alias
    }
    data = {key: value for key, value in raw.items() if key in known}
    try:
        return CompressionClusterStatus.model_validate(data)
    except ValueError:
        # A status this version cannot read (hand-edited, or from a newer operator):
        # keep what identifies the run, start the figures afresh.
        keep = {key: data[key] for key in ("observedGeneration", "startedAt") if key in data}
        try:
            return CompressionClusterStatus.model_validate(keep)
        except ValueError:
            return CompressionClusterStatus()
