"""Sample sets (`spec.samples` > 1): a bounded run made N times, each with fresh workers.

Pure.  When a sample completes and samples are left, the fold closes it like any
bounded run (its own id, summary and verdict in `status.runs`) and begins the next one
as a run that waits for fresh workers (`RunState.awaitingFreshWorkers`): a worker
whose bounded run ended only serves its final report, so the operator scales the
StatefulSet to zero and starts the next sample's workers once the old pods are gone
(docs/operator.md, "Sample sets").  `status.samples` keeps the set's running
statistics, so a set longer than the 10 kept runs is still summarised whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from w5xde.api.statistics import SampleStats
from w5xde.api.v1alpha1 import (
    MAX_SAMPLES,
    CompressionClusterSpec,
    Interval,
    RunState,
    RunSummary,
    SampleFigureStats,
    SampleFigureSummary,
    SampleSetStatus,
    Totals,
)
from w5xde.contract import results


def next_run_id(ids: Iterable[str]) -> str:
    """`run-N` one past the highest `run-N` among `ids`."""
    numbers = [0]
    for run_id in ids:
        prefix, _, number = run_id.rpartition("-")
        if prefix == "run" and number.isdigit():
            numbers.append(int(number))
    return f"run-{max(numbers) + 1}"


def first_sample(spec: CompressionClusterSpec) -> dict[str, int]:
    """The sample fields of a run that begins a set (written only for a set, so a
    cluster without samples reads as before)."""
    return {"sample": 1, "samples": spec.samples} if spec.samples > 1 else {}


def samples_left(run: RunState) -> bool:
    """Whether the set wants another sample after this (completed) one."""
    return run.sample < run.samples


def next_sample(run: RunState, kept: Iterable[RunSummary], start_totals: Totals) -> RunState:
    """The run after a completed sample: a new id, the next sample number, measured from
    `start_totals` (the totals when the previous sample closed), and waiting for the
    previous sample's workers to go."""
    return RunState(
        id=next_run_id([run.id, *(item.id for item in kept)]),
        generation=run.generation,
        spec_digest=run.spec_digest,
        start_totals=start_totals,
        sample=run.sample + 1,
        samples=run.samples,
        awaiting_fresh_workers=True,
        **({"scales": []} if run.scales else {}),
    )


def fresh_workers_ready(run: RunState, pod_names: Iterable[str]) -> RunState:
    """The run once no worker pod of the previous sample is left: it may start."""
    if run.awaiting_fresh_workers and not any(True for _ in pod_names):
        return run.model_copy(update={"awaiting_fresh_workers": False})
    return run


def wants_fresh_workers(run: RunState, replicas: int | None) -> bool:
    """A further sample whose old workers are gone, with the StatefulSet still at zero:
    time to scale it back to `spec.workers`."""
    return (
        run.sample > 1
        and not run.awaiting_fresh_workers
        and run.started_at is None
        and replicas == 0
    )


def _stats_of(figures: SampleFigureStats) -> dict[str, SampleStats]:
    dumped = figures.model_dump(by_alias=True)
    return {name: SampleStats.model_validate(value) for name, value in dumped.items()}


def record_sample(
    current: SampleSetStatus | None, run: RunState, summary: RunSummary
) -> SampleSetStatus:
    """The set after `summary` (a judged, Completed sample) was added to it.  A sample
    that missed `spec.expect` still counts in the figures (it ran to its end) and is
    named in `missed`."""
    set_status = current if current is not None and run.sample > 1 else None
    if set_status is None:
        set_status = SampleSetStatus(id=summary.id, samples=run.samples)
    stats = results.add_sample(_stats_of(set_status.stats), results.sample_values(summary))
    completed = set_status.completed + 1
    missed = [*set_status.missed, *([summary.id] if summary.passed is False else [])]
    return SampleSetStatus(
        id=set_status.id,
        samples=run.samples,
        completed=completed,
        run_ids=[*set_status.run_ids, summary.id][-MAX_SAMPLES:],
        missed=missed[-MAX_SAMPLES:],
        passed=not missed if completed >= run.samples else None,
        summary=summary_of(stats),
        stats=SampleFigureStats.model_validate(stats),
    )


def summary_of(stats: Mapping[str, SampleStats]) -> SampleFigureSummary:
    """The readable summary (`contract.results.figure_summaries`) of the set's stats."""
    summaries = results.figure_summaries(stats)
    return SampleFigureSummary.model_validate(
        {name: Interval(**item.model_dump()) for name, item in summaries.items()}
    )


def starting_set(run: RunState) -> SampleSetStatus | None:
    """`status.samples` while a set's first sample runs (None: the run is no set)."""
    if run.samples <= 1:
        return None
    return SampleSetStatus(id=run.id, samples=run.samples)


def set_message(sample_set: SampleSetStatus) -> str:
    """`3 of 3 samples passed` or `1 of 3 samples missed spec.expect: run-2`."""
    if not sample_set.missed:
        return f"{sample_set.completed} of {sample_set.samples} samples passed"
    return (
        f"{len(sample_set.missed)} of {sample_set.samples} samples missed spec.expect:"
        f" {', '.join(sample_set.missed)}"
    )
