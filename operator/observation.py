"""What the operator sees of one cluster at one moment: plain, immutable states.

`observe.py` builds them from API objects, `report_client.py` adds the workers'
reports; `status_folding.py` turns them into a status patch without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from w5xde.api.reasons import EventType, Reason
from w5xde.contract.report import WorkerReport

__all__ = [
    "Event",
    "EventType",
    "FetchError",
    "Fetched",
    "Observation",
    "PodState",
    "Problem",
    "Reason",
    "StatefulSetState",
]


@dataclass(frozen=True)
class PodState:
    """A worker pod as listed: ready or not, where, and why it cannot run if it cannot."""

    name: str
    ready: bool
    problem: str = ""
    ip: str = ""
    node: str = ""
    #: Container restarts (`containerStatuses[].restartCount`, summed).
    restarts: int = 0
    #: When the last restarted container ended (epoch seconds), and how.
    last_restart_at: float | None = None
    last_exit: str = ""


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

    reason: Reason
    message: str


class FetchError(StrEnum):
    """Why a worker's report could not be had."""

    UNREACHABLE = "Unreachable"  # refused, timed out, no pod IP
    BAD_REPORT = "BadReport"  # answered, but unsigned, unparsable or out of bounds


@dataclass(frozen=True)
class Fetched:
    """One attempt to pull one worker's report: the report, or why not."""

    name: str
    report: WorkerReport | None = None
    error: FetchError | None = None
    message: str = ""


@dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int  # metadata.generation of the CompressionCluster
    applied_generation: int  # the generation the operator last applied (observedGeneration)
    statefulset: StatefulSetState | None
    pods: tuple[PodState, ...]
    problems: tuple[Problem, ...] = ()
    fatal: Problem | None = None
    fetched: tuple[Fetched, ...] = field(default=())


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str
