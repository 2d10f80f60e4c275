"""Condition reasons, Event reasons and Event types: one place, so none is misspelt.

CloudNativePG keeps reasons as constants of its API package, Strimzi restart reasons as
an enum; these are the `reason` of every condition, Event, notable worker and link the
operator writes (docs/operator.md lists what each means).
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Condition and Event reasons the operator sets."""

    # Problems that follow from the spec or the cluster's own objects (Degraded).
    UNSAFE_SYSCTLS = "UnsafeSysctls"
    KEY_SECRET_NOT_OWNED = "KeySecretNotOwned"  # noqa: S105 - a reason, not a password
    CA_SECRET_NOT_OWNED = "CASecretNotOwned"  # noqa: S105 - a reason, not a password
    TLS_DISABLED = "TLSDisabled"
    SOCKET_SYSCTLS_OMITTED = "SocketSysctlsOmitted"
    NO_WORKER_IMAGE = "NoWorkerImage"
    INVALID_SPEC = "InvalidSpec"
    # Problems the fold sees in the workers and their links (Degraded, LinksStalled).
    WORKER_CANNOT_RUN = "WorkerCannotRun"
    WORKERS_STALE = "WorkersStale"
    LINKS_STALLED = "LinksStalled"
    LINKS_FLOWING = "LinksFlowing"
    # Ready / Progressing / Complete.
    WORKERS_READY = "WorkersReady"
    WORKERS_NOT_READY = "WorkersNotReady"
    WORKERS_LOST = "WorkersLost"
    COMPLETED = "Completed"
    COMPLETING = "Completing"
    APPLYING = "Applying"
    ROLLING_OUT = "RollingOut"
    STARTING = "Starting"
    NEXT_SAMPLE = "NextSample"  # a sample of `spec.samples` done: fresh workers for the next
    STABLE = "Stable"
    AS_SPECIFIED = "AsSpecified"
    RUN_FINISHED = "RunFinished"
    RUN_IN_PROGRESS = "RunInProgress"
    UNBOUNDED = "Unbounded"
    # Passed (and its Event when a run ends).
    EXPECTATIONS_MET = "ExpectationsMet"
    EXPECTATION_MISSED = "ExpectationMissed"
    # Events only.
    CREATED = "Created"
    SCALED = "Scaled"
    ROLLED = "Rolled"
    RUNNING = "Running"
    REPAIRED = "Repaired"
    DEGRADED = "Degraded"
    WORKER_RESTARTED = "WorkerRestarted"
    SAMPLE_COMPLETED = "SampleCompleted"
