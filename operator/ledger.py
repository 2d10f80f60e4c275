"""Each cluster's worker runs as the operator last folded them, so totals never go back.

Kept in the operator's memory, not in the status (that would grow with the worker
count).  When a worker run ends (its pod is gone, or it reports a new incarnation)
its last folded counters move into `retired`.  After an operator restart the ledger
starts from the status's `retiredTotals`, and the published totals are floored at
the last published ones: a run that ended while no operator watched is covered by
that floor instead of being counted twice or lost from the totals.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from w5xde.api.v1alpha1 import Totals
from w5xde.contract.figures import add_totals, at_least, totals_of
from w5xde.contract.report import WorkerReport


@dataclass(frozen=True)
class WorkerRun:
    incarnation: str
    totals: Totals


@dataclass(frozen=True)
class Ledger:
    retired: Totals = field(default_factory=Totals)
    runs: dict[str, WorkerRun] = field(default_factory=dict)
    #: The last totals published: the floor the next ones never go below.
    published: Totals = field(default_factory=Totals)

    @classmethod
    def from_status(cls, retired: Totals, published: Totals) -> Ledger:
        return cls(retired=retired, runs={}, published=published)

    def advance(self, reports: Iterable[WorkerReport], pods: Collection[str]) -> Ledger:
        """The ledger after one fold: ended runs retired, fresh reports recorded."""
        retired = self.retired
        runs = dict(self.runs)
        for name in [name for name in runs if name not in pods]:
            retired = add_totals(retired, runs.pop(name).totals)
        for report in reports:
            if report.name not in pods:
                continue
            previous = runs.get(report.name)
            if previous is not None and previous.incarnation != report.incarnation:
                retired = add_totals(retired, previous.totals)
            runs[report.name] = WorkerRun(report.incarnation, totals_of([report]))
        live = totals_of_runs(runs.values())
        published = at_least(self.published, add_totals(retired, live))
        return Ledger(retired=retired, runs=runs, published=published)

    @property
    def totals(self) -> Totals:
        return self.published


def totals_of_runs(runs: Iterable[WorkerRun]) -> Totals:
    total = Totals()
    for run in runs:
        total = add_totals(total, run.totals)
    return total
