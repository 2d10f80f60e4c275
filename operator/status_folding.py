"""Folds the workers' own status entries and what the operator sees into the top level.

Pure: an observation in, a JSON merge patch for `status` out (plus the Events worth
telling users).  The patch only ever touches `status.workers.<pod>` to drop a pod that
is gone (`null`) or to flag a silent worker as stale; everything else in an entry
belongs to its worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    ConditionType,
    FoldedWorker,
    Phase,
    Totals,
    WorkerReport,
    parse_duration,
)
from w5xde.operator.conditions import condition, is_true, merge_conditions

#: A worker is stale after this many report intervals without a report.
STALE_AFTER_INTERVALS = 3
#: Extra seconds after a bounded run ends, so the workers' final reports arrive.
COMPLETION_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class PodState:
    """A worker pod as listed: ready or not, and why it cannot run if it cannot."""

    name: str
    ready: bool
    problem: str = ""


@dataclass(frozen=True)
class StatefulSetState:
    replicas: int
    ready_replicas: int
    updated_replicas: int
    current_revision: str
    update_revision: str
    up_to_date: bool  # the controller has seen the latest StatefulSet spec

    @property
    def rolled_out(self) -> bool:
        return (
            self.up_to_date
            and self.current_revision == self.update_revision
            and self.updated_replicas >= self.replicas
        )


@dataclass(frozen=True)
class Problem:
    """Something that keeps the cluster from running as specified (a Degraded reason)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int  # metadata.generation of the CompressionCluster
    applied_generation: int  # the generation the operator last applied (observedGeneration)
    statefulset: StatefulSetState | None
    pods: tuple[PodState, ...]
    problems: tuple[Problem, ...] = ()
    fatal: Problem | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Fold:
    patch: dict[str, Any]
    events: tuple[Event, ...] = ()
    completed: bool = False
    stale_workers: tuple[str, ...] = field(default=())


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_throughput(bytes_per_second: float) -> str:
    """Decimal megabytes, the unit of the seed's figures ("212.4 MB/s")."""
    return f"{bytes_per_second / 1e6:.1f} MB/s"


def is_stale(report: WorkerReport, now: datetime, interval_seconds: float) -> bool:
    last = parse_time(report.last_report)
    if last is None:
        return False  # never reported yet: starting, not silent
    return now - last > timedelta(seconds=STALE_AFTER_INTERVALS * interval_seconds)


def fold_status(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
) -> Fold:
    """The status patch for one look at the cluster."""
    now = observation.now
    pods = {pod.name: pod for pod in observation.pods}
    interval = float(spec.status_interval_seconds)

    present = {name: report for name, report in status.workers.items() if name in pods}
    gone = sorted(name for name in status.workers if name not in pods)
    stale = sorted(name for name, report in present.items() if is_stale(report, now, interval))
    fresh = [
        report
        for name, report in present.items()
        if name not in stale and parse_time(report.last_report) is not None
    ]
    ready_workers = sum(1 for pod in pods.values() if pod.ready and pod.name not in stale)

    workers_patch: dict[str, Any] = {name: None for name in gone}
    newly_stale = [name for name in stale if not present[name].stale]
    for name in newly_stale:
        workers_patch[name] = {"stale": True}

    throughput = sum(report.throughput_bytes_per_second for report in fresh)
    wire = sum(report.wire_bytes_per_second for report in fresh)
    retired = _retire_ended_runs(status, pods)
    folded = {
        name: FoldedWorker(incarnation=report.incarnation, totals=_totals([report]))
        for name, report in present.items()
    }
    totals = _add(retired, _totals(present.values()))

    started_at = status.started_at
    if started_at is None and ready_workers > 0:
        started_at = isoformat(now)
    completed = _run_is_over(spec, started_at, now)
    figures = _figures(throughput, wire, fresh)
    if completed:
        figures = _run_averages(spec, totals)

    problems = list(observation.problems)
    problems.extend(
        Problem("WorkerCannotRun", f"{pod.name}: {pod.problem}")
        for pod in observation.pods
        if pod.problem
    )
    if stale:
        problems.append(
            Problem(
                "WorkersStale",
                f"no report for {STALE_AFTER_INTERVALS} intervals from: {', '.join(stale)}",
            )
        )

    phase = _phase(spec, observation, ready_workers, problems, completed)
    conditions = _conditions(spec, observation, ready_workers, problems, phase)
    merged = merge_conditions(status.conditions, conditions, isoformat(now))

    patch: dict[str, Any] = {
        "phase": phase.value,
        "ready": f"{ready_workers}/{spec.workers}",
        "readyWorkers": ready_workers,
        **figures,
        "totals": totals.model_dump(mode="json", by_alias=True),
        "retiredTotals": retired.model_dump(mode="json", by_alias=True),
        "foldedWorkers": {
            **{name: None for name in status.folded_workers if name not in folded},
            **{name: run.model_dump(mode="json", by_alias=True) for name, run in folded.items()},
        },
        "conditions": [item.model_dump(mode="json", by_alias=True) for item in merged],
        "startedAt": started_at,
        "completedAt": isoformat(now) if completed else None,
    }
    if workers_patch:
        patch["workers"] = workers_patch
    events = _events(status, phase, problems, newly_stale, merged)
    return Fold(patch=patch, events=events, completed=completed, stale_workers=tuple(stale))


def _retire_ended_runs(status: CompressionClusterStatus, pods: Mapping[str, PodState]) -> Totals:
    """`retiredTotals` plus every worker run that ended since the last fold.

    A run ended when its pod is gone (its final report is the freshest figure) or when
    the pod reports a new incarnation (the old run's counters are known only as of the
    last fold, `foldedWorkers`). Without this, a restart or a scale-down would make
    `totals` go backwards and forget the batches, and the losses, of the runs that ended.
    """
    retired = status.retired_totals
    for name in status.folded_workers.keys() | status.workers.keys():
        last_folded = status.folded_workers.get(name)
        report = status.workers.get(name)
        if last_folded is not None and (
            report is None or report.incarnation != last_folded.incarnation
        ):
            retired = _add(retired, last_folded.totals)
        if name not in pods and report is not None:
            retired = _add(retired, _totals([report]))
    return retired


def _add(left: Totals, right: Totals) -> Totals:
    return Totals(
        batches=left.batches + right.batches,
        raw_bytes=left.raw_bytes + right.raw_bytes,
        wire_bytes=left.wire_bytes + right.wire_bytes,
        lost_batches=left.lost_batches + right.lost_batches,
        corrupt_batches=left.corrupt_batches + right.corrupt_batches,
        resent_batches=left.resent_batches + right.resent_batches,
    )


def _totals(reports: Any) -> Totals:
    reports = list(reports)
    return Totals(
        batches=sum(report.batches for report in reports),
        raw_bytes=sum(report.raw_bytes for report in reports),
        wire_bytes=sum(report.wire_bytes for report in reports),
        lost_batches=sum(report.lost_batches for report in reports),
        corrupt_batches=sum(report.corrupt_batches for report in reports),
        resent_batches=sum(report.resent_batches for report in reports),
    )


def _figures(throughput: float, wire: float, fresh: Sequence[WorkerReport]) -> dict[str, Any]:
    count = len(fresh)
    return {
        "throughput": format_throughput(throughput),
        "throughputBytesPerSecond": round(throughput, 1),
        "wireBytesPerSecond": round(wire, 1),
        "batchesPerSecond": round(sum(report.batches_per_second for report in fresh), 1),
        "compressionRatio": round(throughput / wire, 2) if wire > 0 else 0,
        "networkSeconds": round(sum(r.network_seconds for r in fresh) / count, 2) if count else 0,
        "compressionSeconds": (
            round(sum(r.compression_seconds for r in fresh) / count, 2) if count else 0
        ),
        "memoryBytes": max((report.rss_bytes for report in fresh), default=0),
    }


def _run_averages(spec: CompressionClusterSpec, totals: Totals) -> dict[str, Any]:
    """A finished run's figures are its averages, not the idle last interval."""
    seconds = parse_duration(spec.duration) or 1.0
    throughput = totals.raw_bytes / seconds
    return {
        "throughput": format_throughput(throughput),
        "throughputBytesPerSecond": round(throughput, 1),
        "wireBytesPerSecond": round(totals.wire_bytes / seconds, 1),
        "batchesPerSecond": round(totals.batches / seconds, 1),
        "compressionRatio": (
            round(totals.raw_bytes / totals.wire_bytes, 2) if totals.wire_bytes else 0
        ),
    }


def _run_is_over(spec: CompressionClusterSpec, started_at: str | None, now: datetime) -> bool:
    seconds = parse_duration(spec.duration)
    started = parse_time(started_at)
    if seconds is None or started is None:
        return False
    grace = spec.status_interval_seconds + COMPLETION_GRACE_SECONDS
    return now >= started + timedelta(seconds=seconds + grace)


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
        ready = condition(ConditionType.READY, False, "Completed", "the run is over", generation)
        progressing = condition(
            ConditionType.PROGRESSING, False, "Completed", "the run is over", generation
        )
    else:
        ready_now = all_ready and rolled_out and current and observation.fatal is None
        ready = condition(
            ConditionType.READY,
            ready_now,
            "WorkersReady" if ready_now else "WorkersNotReady",
            text,
            generation,
        )
        if not current or statefulset is None:
            progressing = condition(
                ConditionType.PROGRESSING, True, "Applying", "applying the spec", generation
            )
        elif not statefulset.rolled_out:
            progressing = condition(
                ConditionType.PROGRESSING, True, "RollingOut", "replacing worker pods", generation
            )
        elif not all_ready:
            progressing = condition(ConditionType.PROGRESSING, True, "Starting", text, generation)
        else:
            progressing = condition(
                ConditionType.PROGRESSING, False, "Stable", "all workers up to date", generation
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
        degraded = condition(ConditionType.DEGRADED, False, "AsSpecified", "", generation)
    return [ready, progressing, degraded]


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
            Event("Warning", "WorkersStale", f"no recent report from: {', '.join(newly_stale)}")
        )
    if phase is not status.phase:
        if phase is Phase.RUNNING:
            events.append(Event("Normal", "Running", "all workers are ready"))
        elif phase is Phase.COMPLETED:
            events.append(Event("Normal", "Completed", "the bounded run is over; figures kept"))
    return tuple(events)


def parse_status(raw: Mapping[str, Any] | None) -> CompressionClusterStatus:
    """The stored status, tolerating fields this version does not know (kept, not parsed)."""
    if not raw:
        return CompressionClusterStatus()
    known = set(CompressionClusterStatus.model_fields) | {
        info.alias for info in CompressionClusterStatus.model_fields.values() if info.alias
    }
    data = {key: value for key, value in raw.items() if key in known and key != "workers"}
    status = CompressionClusterStatus.model_validate(data)
    return status.model_copy(update={"workers": _parse_reports(raw.get("workers"))})


def _parse_reports(raw: Any) -> dict[str, WorkerReport]:
    """Each worker's entry on its own: one malformed entry must not blind the fold."""
    reports: dict[str, WorkerReport] = {}
    for name, entry in (raw or {}).items():
        try:
            reports[name] = WorkerReport.model_validate(entry or {})
        except ValidationError:
            reports[name] = WorkerReport()  # present (so a gone pod's entry is still dropped)
    return reports
