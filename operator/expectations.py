"""`spec.expect` at the end of a run: the `Passed` condition and its Event.

The checks themselves are `contract.results.judge` (the same as `w5xde local --expect`),
stored on the run's summary in `status.runs`; this module only turns the last verdict
into a condition (kept while that run is the cluster's current one) and an Event.
"""

from __future__ import annotations

from collections.abc import Sequence

from w5xde.api.reasons import EventType, Reason
from w5xde.api.v1alpha1 import (
    Condition,
    ConditionType,
    RunState,
    RunSummary,
    SampleSetStatus,
)
from w5xde.contract import results
from w5xde.operator.conditions import condition
from w5xde.operator.observation import Event
from w5xde.operator.sample_sets import set_message


def _verdict(run: RunState, kept: Sequence[RunSummary]) -> RunSummary | None:
    """The judged summary of the current run once it completed (None before)."""
    for summary in reversed(kept):
        if summary.id == run.id:
            return summary if summary.passed is not None else None
    return None


def message(summary: RunSummary) -> str:
    """`run-3: missed minThroughputBytesPerSecond: expected >= 3e+08, measured 1.2e+08`."""
    missed = results.missed_message(summary.expectations)
    if missed:
        return f"{summary.id}: missed {missed}"
    held = ", ".join(item.expectation for item in summary.expectations)
    return f"{summary.id}: every expectation held ({held})"


def passed_conditions(
    run: RunState,
    kept: Sequence[RunSummary],
    generation: int,
    sample_set: SampleSetStatus | None = None,
) -> list[Condition]:
    """`Passed` for the current run once it has a verdict; none before (or unbounded).
    A sample set is judged whole, once its last sample is: passed when every sample
    passed (each sample's own checks stay on its `status.runs` entry)."""
    if run.samples > 1:
        return _set_conditions(sample_set, generation)
    summary = _verdict(run, kept)
    if summary is None:
        return []
    reason = Reason.EXPECTATIONS_MET if summary.passed else Reason.EXPECTATION_MISSED
    return [
        condition(ConditionType.PASSED, bool(summary.passed), reason, message(summary), generation)
    ]


def _set_conditions(sample_set: SampleSetStatus | None, generation: int) -> list[Condition]:
    if sample_set is None or sample_set.passed is None:
        return []
    reason = Reason.EXPECTATIONS_MET if sample_set.passed else Reason.EXPECTATION_MISSED
    message = f"sample set {sample_set.id}: {set_message(sample_set)}"
    return [condition(ConditionType.PASSED, sample_set.passed, reason, message, generation)]


def passed_events(summary: RunSummary) -> list[Event]:
    """One Event when a run is judged: Normal if it passed, Warning naming what it missed."""
    if summary.passed is None:
        return []
    if summary.passed:
        return [Event(EventType.NORMAL, Reason.EXPECTATIONS_MET, message(summary))]
    return [Event(EventType.WARNING, Reason.EXPECTATION_MISSED, message(summary))]
