"""What the fold loop remembers of one cluster between folds, and the kopf index copy.

The memory is only ever a cache: an operator restart or a peering takeover starts
from the stored status (the ledger from `retiredTotals` and `totals`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from w5xde.operator.cluster_keys import ClusterKeys
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import Fetched, PodState

#: While a cluster is coming up (more workers answer each time), fold this often, so
#: the first figures show within seconds rather than a whole interval.
STARTING_FOLD_SECONDS = 2.0
#: ...but a cluster none of whose workers ever answers goes back to its interval.
STARTING_WINDOW_SECONDS = 120.0
#: After a start, the first fold of a cluster waits for the pod index to hold every pod
#: the API server lists (so no status is written from a half-filled index), but no
#: longer than this.
INDEX_WAIT_SECONDS = 30.0


def cluster_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the loop keeps of a CompressionCluster (a copy: kopf reuses its bodies)."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            key: copy.deepcopy(metadata.get(key))
            for key in ("name", "namespace", "uid", "generation", "resourceVersion", "annotations")
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def revision(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class ClusterMemory:
    """What the loop remembers of one cluster between folds."""

    uid: str
    ledger: Ledger | None = None
    last_heard: dict[str, float] = field(default_factory=dict)
    next_due: float = 0.0
    reported_last: int = 0  # reports pulled by the previous fold
    since: float = field(default_factory=time.monotonic)  # first seen by this loop
    seen_generations: tuple[int, int] = (0, 0)
    written: dict[str, Any] | None = None  # our last status patch's result
    keys: ClusterKeys = field(default_factory=ClusterKeys)
    #: The pod index has caught up with the API server since this loop first saw the
    #: cluster (see `INDEX_WAIT_SECONDS`).
    indexed: bool = False
    #: The run deadline last written to the run ConfigMap (epoch seconds, None for "");
    #: `deadline_written` is False until this loop wrote it once.
    deadline: float | None = None
    deadline_written: bool = False
    #: Each pod's restart count at the previous fold (None before the first: a restart
    #: while no operator watched is named in `notableWorkers`, not posted again).
    restarts: dict[str, int] | None = None

    def deadline_changed(self, deadline: float | None) -> bool:
        return not self.deadline_written or deadline != self.deadline

    def fresher(self, body: dict[str, Any]) -> dict[str, Any]:
        """The cluster body, with our own last write when the index has not seen it yet."""
        if self.written is not None and revision(self.written) > revision(body):
            return {**body, "status": self.written.get("status") or {}}
        return body

    def index_caught_up(self, indexed: Iterable[str], listed: Iterable[str]) -> bool:
        """Whether the pod index holds every pod the API server listed (or waited enough)."""
        if set(listed) <= set(indexed) or time.monotonic() - self.since > INDEX_WAIT_SECONDS:
            self.indexed = True
        return self.indexed

    def heard(self, states: Sequence[PodState], fetched: Sequence[Fetched], interval: int) -> int:
        """Record who reported now; schedule the next fold; how many reported."""
        clock = time.time()
        reported = {item.name for item in fetched if item.report is not None}
        for pod in states:
            if pod.name in reported or pod.name not in self.last_heard:
                self.last_heard[pod.name] = clock
        present = {pod.name for pod in states}
        for name in [name for name in self.last_heard if name not in present]:
            del self.last_heard[name]
        starting = time.monotonic() - self.since < STARTING_WINDOW_SECONDS
        if len(reported) > self.reported_last or (starting and states and not reported):
            self.next_due = time.monotonic() + min(STARTING_FOLD_SECONDS, interval)
        self.reported_last = len(reported)
        return len(reported)
