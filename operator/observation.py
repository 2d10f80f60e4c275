"""What the operator sees of one cluster at one moment: plain, immutable states.

`observe.py` builds them from API objects, `report_client.py` adds the workers'
reports; `status_folding.py` turns them into a status patch without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from w5xde.contract.report import WorkerReport


class Reason(StrEnum):
    """Condition and Event reasons the operator sets; one place, so none is misspelt."""

    UNSAFE_SYSCTLS = "UnsafeSysctls"
    KEY_SECRET_NOT_OWNED = "KeySecretNotOwned"  # noqa: S105 - a reason, not a password
    CA_SECRET_NOT_OWNED = "CASecretNotOwned"  # noqa: S105 - a reason, not a password
    TLS_DISABLED = "TLSDisabled"
    SOCKET_SYSCTLS_OMITTED = "SocketSysctlsOmitted"
    NO_WORKER_IMAGE = "NoWorkerImage"
    INVALID_SPEC = "InvalidSpec"
    WORKER_CANNOT_RUN = "WorkerCannotRun"
    WORKERS_STALE = "WorkersStale"
    WORKERS_READY = "WorkersReady"
    WORKERS_NOT_READY = "WorkersNotReady"
    COMPLETED = "Completed"
    APPLYING = "Applying"
    ROLLING_OUT = "RollingOut"
    STARTING = "Starting"
    STABLE = "Stable"
    AS_SPECIFIED = "AsSpecified"
    RUN_FINISHED = "RunFinished"
    RUN_IN_PROGRESS = "RunInProgress"
    UNBOUNDED = "Unbounded"


@dataclass(frozen=True)
class PodState:
    """A worker pod as listed: ready or not, where, and why it cannot run if it cannot."""

    name: str
    ready: bool
    problem: str = ""
    ip: str = ""
    node: str = ""


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
    type: str  # Normal | Warning
    reason: str
    message: str
