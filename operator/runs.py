"""Run bookkeeping: which run a fold belongs to, its one deadline, scales, summaries.

Pure.  A run begins when a generation is applied and the first worker is ready; a
bounded run keeps one deadline, `startedAt` + `duration`.  A spec change that only
scales the workers keeps the run (and its deadline) and records the scale in
`run.scales`; any other spec change closes the run (`SpecChanged`) and begins a new
one (docs/operator.md, "Runs").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.api.statistics import SampleStats
from w5xde.api.v1alpha1 import (
    MAX_RUN_SCALES,
    MAX_WORKERS,
    CompressionClusterSpec,
    CompressionClusterStatus,
    Interval,
    RunOutcome,
    RunScale,
    RunState,
    RunSummary,
    Spread,
    Totals,
    parse_duration,
)
from w5xde.contract.figures import ClusterFigures, minus_floored, run_averages
from w5xde.contract.report import WorkerReport
from w5xde.operator.observation import Observation, PodState
from w5xde.operator.sample_sets import first_sample, next_run_id

#: A worker is stale after this many report intervals without a report.
STALE_AFTER_INTERVALS = 3
#: Extra seconds after a bounded run ends, so the workers' final reports arrive.
COMPLETION_GRACE_SECONDS = 2.0


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)  # reads "Z" too (Python 3.11+)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _digest(spec_json: Mapping[str, Any]) -> str:
    text = json.dumps(spec_json, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Spec fields that do not change what a run measures (how it is judged, how often it
#: is repeated).
_NOT_MEASURED = {"expect", "samples"}


def _measured(spec: CompressionClusterSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude=_NOT_MEASURED)


def spec_digest(spec: CompressionClusterSpec) -> str:
    """12 hex digits of the measured spec: runs compare only when these match (a change
    of `expect` is not a new run)."""
    return _digest(_measured(spec))


def only_rescaled(spec: CompressionClusterSpec, digest: str) -> bool:
    """Whether `spec` differs from the spec of `digest` in its worker count alone."""
    shape = _measured(spec)
    counts = range(1, MAX_WORKERS + 1)
    return any(_digest({**shape, "workers": count}) == digest for count in counts)


def run_deadline(spec: CompressionClusterSpec, run: RunState) -> datetime | None:
    """A bounded run's one deadline: its start plus `duration` (None if unbounded or
    not started)."""
    seconds = parse_duration(spec.duration)
    started = parse_time(run.started_at)
    if seconds is None or started is None:
        return None
    return started + timedelta(seconds=seconds)


def _next_run_id(status: CompressionClusterStatus) -> str:
    return next_run_id([status.run.id, *(item.id for item in status.runs)])


def current_run(
    spec: CompressionClusterSpec,
    status: CompressionClusterStatus,
    observation: Observation,
    published: Totals,
) -> tuple[RunState, list[RunSummary]]:
    """The run this fold belongs to, and the kept runs (the previous one closed if the
    applied spec changed under it other than by a scale)."""
    run = status.run
    kept = list(status.runs)
    if run.id and run.generation == observation.applied_generation:
        return run, kept
    in_progress = bool(run.id and run.started_at and run.completed_at is None)
    if in_progress and only_rescaled(spec, run.spec_digest):
        update: dict[str, Any] = {"generation": observation.applied_generation}
        if spec.samples > 1 or run.samples > 1:  # `samples` is not measured: the set goes on
            update.update(samples=max(spec.samples, run.sample))
        if spec_digest(spec) != run.spec_digest:
            scale = RunScale(at=isoformat(observation.now), workers=spec.workers)
            update["spec_digest"] = spec_digest(spec)
            update["scales"] = [*run.scales, scale][:MAX_RUN_SCALES]
        return run.model_copy(update=update), kept
    if in_progress:
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
        **first_sample(spec),
        # Written as [] only to clear the previous run's scales from the stored status.
        **({"scales": []} if run.scales else {}),
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
        **({"scales": run.scales} if run.scales else {}),
        workers=run.workers,
        nodes=run.nodes,
        links=run.links,
        links_sharing_node=run.links_sharing_node,
        versions=run.versions,
        throughput_bytes_per_second=figures.throughput_bytes_per_second,
        wire_bytes_per_second=figures.wire_bytes_per_second,
        batches_per_second=figures.batches_per_second,
        compression_ratio=figures.compression_ratio,
        totals=figures.totals,
        spread=spread,
        throughput=interval_of(run.throughput_samples),
        batches=interval_of(run.batches_per_second_samples),
        cpu_seconds_per_gb=interval_of(run.cpu_seconds_per_gb_samples, digits=3),
        sample=run.sample,
        samples=run.samples,
    )


def interval_of(samples: SampleStats, digits: int = 1) -> Interval:
    return Interval(
        mean=round(samples.mean, digits),
        ci95=round(samples.ci95, digits),
        min=round(samples.min, digits),
        max=round(samples.max, digits),
        samples=samples.count,
    )


def run_ended(spec: CompressionClusterSpec, run: RunState, now: datetime) -> bool:
    """A bounded run's deadline has passed (it may still be completing)."""
    deadline = run_deadline(spec, run)
    return deadline is not None and now >= deadline


def run_is_over(
    spec: CompressionClusterSpec,
    run: RunState,
    now: datetime,
    reports: Sequence[WorkerReport],
    pods: Mapping[str, PodState],
) -> bool:
    """A bounded run is over once every worker says it finished (its final report is in),
    or, for workers that never say so, a few intervals after the run's deadline."""
    deadline = run_deadline(spec, run)
    if deadline is None or now < deadline:
        return False
    finished = {report.name for report in reports if report.finished}
    if pods and all(name in finished for name in pods):
        return True
    grace = STALE_AFTER_INTERVALS * spec.status_interval_seconds + COMPLETION_GRACE_SECONDS
    return now >= deadline + timedelta(seconds=grace)
