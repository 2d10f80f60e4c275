"""The phase, conditions and Events of one fold: pure rules over what the fold found.

Every condition is computed afresh on every fold (running, completing, completed,
after a recovery) from the problems of that fold alone, so none stays set after its
cause is gone (docs/operator.md, "Conditions").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from w5xde.api.reasons import EventType, Reason
from w5xde.api.v1alpha1 import (
    CompressionClusterSpec,
    CompressionClusterStatus,
    Condition,
    ConditionType,
    Phase,
)
from w5xde.operator.conditions import condition, find, is_true
from w5xde.operator.observation import Event, Observation, PodState, Problem

#: Problem reasons that belong to the workers of a run: a finished run drops them.
RUN_PROBLEMS = frozenset({Reason.WORKER_CANNOT_RUN, Reason.WORKERS_STALE, Reason.LINKS_STALLED})


@dataclass(frozen=True)
class Progress:
    """What `Progressing` says: whether the cluster is on its way somewhere, and why."""

    moving: bool
    reason: Reason
    message: str


@dataclass(frozen=True)
class Situation:
    """What one fold found, as the phase and condition rules need it."""

    spec: CompressionClusterSpec
    observation: Observation
    ready_workers: int
    problems: tuple[Problem, ...]
    completed: bool
    #: The bounded run's deadline passed; the final reports are still coming in.
    completing: bool
    #: The run had all its workers up before this fold (a worker going is not a restart
    #: of the cluster: the phase stays).
    was_running: bool
    lost: tuple[str, ...] = ()
    links_problem: Problem | None = None
    #: `LinksStalled` is written once it was ever set (then False while links flow).
    links_condition: bool = False
    #: Between two samples of a set: what `Progressing` says (empty otherwise).
    next_sample: str = ""

    @property
    def all_ready(self) -> bool:
        return self.ready_workers >= self.spec.workers

    @property
    def text(self) -> str:
        return f"{self.ready_workers}/{self.spec.workers} workers ready"


def phase_of(situation: Situation) -> Phase:
    if situation.observation.fatal is not None:
        return Phase.FAILED
    if situation.completed:
        return Phase.COMPLETED
    if situation.completing:
        return Phase.COMPLETING
    if situation.problems:
        return Phase.DEGRADED
    if situation.next_sample:  # the next sample has not started: its workers are coming
        return Phase.PENDING
    if situation.all_ready or (situation.was_running and situation.ready_workers > 0):
        return Phase.RUNNING
    return Phase.PENDING


def progress_of(situation: Situation) -> Progress:
    observation = situation.observation
    statefulset = observation.statefulset
    if situation.completed:
        return Progress(False, Reason.COMPLETED, "the run is over")
    if observation.applied_generation < observation.generation or statefulset is None:
        return Progress(True, Reason.APPLYING, "applying the spec")
    if situation.next_sample:
        return Progress(True, Reason.NEXT_SAMPLE, situation.next_sample)
    if not statefulset.rolled_out:
        return Progress(True, Reason.ROLLING_OUT, "replacing worker pods")
    if situation.completing:
        return Progress(
            True, Reason.COMPLETING, "the run's deadline passed: waiting for the final reports"
        )
    if situation.lost:
        return Progress(
            True, Reason.WORKERS_LOST, f"{situation.text}; lost: {names(situation.lost)}"
        )
    if not situation.all_ready:
        return Progress(True, Reason.STARTING, situation.text)
    return Progress(False, Reason.STABLE, "all workers up to date")


def conditions_of(situation: Situation, phase: Phase) -> list[Condition]:
    spec = situation.spec
    observation = situation.observation
    generation = observation.applied_generation
    fatal = observation.fatal
    progress = progress_of(situation)
    if phase is Phase.COMPLETED:
        ready = condition(
            ConditionType.READY, False, Reason.COMPLETED, "the run is over", generation
        )
    else:
        statefulset = observation.statefulset
        ready_now = (
            situation.all_ready
            and statefulset is not None
            and statefulset.rolled_out
            and observation.applied_generation >= observation.generation
            and fatal is None
        )
        reason = Reason.WORKERS_READY if ready_now else Reason.WORKERS_NOT_READY
        ready = condition(ConditionType.READY, ready_now, reason, situation.text, generation)
    progressing = condition(
        ConditionType.PROGRESSING, progress.moving, progress.reason, progress.message, generation
    )
    trouble = fatal or (situation.problems[0] if situation.problems else None)
    degraded = condition(
        ConditionType.DEGRADED,
        trouble is not None,
        trouble.reason if trouble is not None else Reason.AS_SPECIFIED,
        _degraded_message(situation),
        generation,
    )
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
    failed = condition(
        ConditionType.FAILED,
        fatal is not None,
        fatal.reason if fatal is not None else Reason.AS_SPECIFIED,
        fatal.message if fatal is not None else "",
        generation,
    )
    found = [ready, progressing, degraded, complete, failed]
    if situation.links_problem is not None or situation.links_condition:
        found.append(_links_condition(situation, generation))
    return found


def _degraded_message(situation: Situation) -> str:
    if situation.observation.fatal is not None:
        return situation.observation.fatal.message
    return "; ".join(problem.message for problem in situation.problems)


def _links_condition(situation: Situation, generation: int) -> Condition:
    problem = situation.links_problem
    if problem is not None:
        return condition(
            ConditionType.LINKS_STALLED, True, Reason.LINKS_STALLED, problem.message, generation
        )
    message = "the run is over" if situation.completed else "every reported link is flowing"
    return condition(ConditionType.LINKS_STALLED, False, Reason.LINKS_FLOWING, message, generation)


def had_links_condition(status: CompressionClusterStatus) -> bool:
    return find(status.conditions, ConditionType.LINKS_STALLED) is not None


def events_of(
    status: CompressionClusterStatus,
    phase: Phase,
    situation: Situation,
    conditions: Sequence[Condition],
    *,
    newly_stale: Sequence[str],
    restarted: Sequence[PodState],
) -> tuple[Event, ...]:
    events: list[Event] = []
    problems = situation.problems
    if is_true(conditions, ConditionType.DEGRADED) and not is_true(
        status.conditions, ConditionType.DEGRADED
    ):
        message = "; ".join(problem.message for problem in problems) or "see status.conditions"
        reason = problems[0].reason if problems else Reason.DEGRADED
        events.append(Event(EventType.WARNING, reason, message))
    if newly_stale and not events:
        events.append(
            Event(
                EventType.WARNING,
                Reason.WORKERS_STALE,
                f"no recent report from: {', '.join(newly_stale)}",
            )
        )
    links_problem = situation.links_problem
    if (
        links_problem is not None
        and not is_true(status.conditions, ConditionType.LINKS_STALLED)
        and not any(event.reason is Reason.LINKS_STALLED for event in events)
    ):
        events.append(Event(EventType.WARNING, Reason.LINKS_STALLED, links_problem.message))
    events.extend(
        Event(
            EventType.WARNING,
            Reason.WORKER_RESTARTED,
            f"{pod.name} restarted ({pod.restarts} in all): its last container ended"
            f" {pod.last_exit or 'unexpectedly'}",
        )
        for pod in restarted
    )
    if phase is not status.phase:
        if phase is Phase.RUNNING:
            message = "all workers are ready" if situation.all_ready else situation.text
            events.append(Event(EventType.NORMAL, Reason.RUNNING, message))
        elif phase is Phase.COMPLETED:
            events.append(
                Event(EventType.NORMAL, Reason.COMPLETED, "the bounded run is over; figures kept")
            )
    return tuple(events)


def names(listed: Sequence[str], shown: int = 10) -> str:
    joined = ", ".join(listed[:shown])
    return joined if len(listed) <= shown else f"{joined} and {len(listed) - shown} more"
