"""The fold loop's memory of a cluster: no fold from a half-filled pod index after a
start, and who was heard from when."""

from __future__ import annotations

import time

from w5xde.contract.report import WorkerReport
from w5xde.operator import cluster_memory
from w5xde.operator.cluster_memory import ClusterMemory
from w5xde.operator.observation import Fetched, FetchError, PodState


def test_the_first_fold_waits_until_the_index_holds_every_listed_pod() -> None:
    memory = ClusterMemory(uid="u")
    assert not memory.index_caught_up([], ["d-0", "d-1"])
    assert not memory.index_caught_up(["d-0"], ["d-0", "d-1"])
    assert memory.index_caught_up(["d-0", "d-1"], ["d-0", "d-1"])
    assert memory.indexed  # asked once: later folds do not list again
    assert ClusterMemory(uid="u").index_caught_up([], [])  # nothing to wait for


def test_an_index_that_never_catches_up_is_waited_for_a_bounded_time() -> None:
    memory = ClusterMemory(uid="u", since=time.monotonic() - cluster_memory.INDEX_WAIT_SECONDS - 1)
    assert memory.index_caught_up([], ["d-0"])


def test_heard_records_reports_and_first_sight_and_forgets_gone_pods() -> None:
    memory = ClusterMemory(uid="u", last_heard={"gone": 1.0, "d-1": 5.0})
    report = WorkerReport(name="d-0", incarnation="i", generated_at=1.0)
    states = (PodState("d-0", True, ip="10.0.0.1"), PodState("d-1", True, ip="10.0.0.2"))
    fetched = [Fetched("d-0", report=report), Fetched("d-1", error=FetchError.UNREACHABLE)]
    assert memory.heard(states, fetched, 10) == 1
    assert set(memory.last_heard) == {"d-0", "d-1"}
    assert memory.last_heard["d-1"] == 5.0  # not heard from: its last report stays
    assert memory.last_heard["d-0"] > 5.0
