"""Kubernetes-style conditions: transition times that only move when the status flips."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from w5xde.api.v1alpha1 import Condition, ConditionStatus, ConditionType


def condition(
    kind: ConditionType, status: bool, reason: str, message: str, generation: int
) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if status else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def merge_conditions(
    previous: Sequence[Condition], current: Iterable[Condition], now: str
) -> list[Condition]:
    """`current` with each `lastTransitionTime` kept from `previous` unless the status changed."""
    before = {item.type: item for item in previous}
    merged = []
    for item in current:
        old = before.get(item.type)
        if old is not None and old.status == item.status and old.last_transition_time:
            merged.append(
                item.model_copy(update={"last_transition_time": old.last_transition_time})
            )
        else:
            merged.append(item.model_copy(update={"last_transition_time": now}))
    return merged


def find(conditions: Sequence[Condition], kind: ConditionType) -> Condition | None:
    return next((item for item in conditions if item.type == kind), None)


def is_true(conditions: Sequence[Condition], kind: ConditionType) -> bool:
    found = find(conditions, kind)
    return found is not None and found.status == ConditionStatus.TRUE
