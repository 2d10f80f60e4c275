from __future__ import annotations

from w5xde.api.v1alpha1 import ConditionStatus, ConditionType
from w5xde.operator.conditions import condition, find, is_true, merge_conditions


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = merge_conditions(
        [], [condition(ConditionType.READY, False, "Starting", "0/4", 1)], "T1"
    )
    assert first[0].last_transition_time == "T1"
    same = merge_conditions(
        first, [condition(ConditionType.READY, False, "Starting", "1/4", 1)], "T2"
    )
    assert same[0].last_transition_time == "T1"
    assert same[0].message == "1/4"
    flipped = merge_conditions(
        same, [condition(ConditionType.READY, True, "WorkersReady", "4/4", 2)], "T3"
    )
    assert flipped[0].last_transition_time == "T3"
    assert flipped[0].observed_generation == 2
    assert is_true(flipped, ConditionType.READY)
    assert not is_true(flipped, ConditionType.DEGRADED)
    found = find(flipped, ConditionType.READY)
    assert found is not None
    assert found.status == ConditionStatus.TRUE
