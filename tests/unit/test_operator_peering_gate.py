"""The fold loop follows kopf's peering rule: only the highest live priority folds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from w5xde.operator.peering_gate import PeeringGate, is_active

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


def test_highest_live_priority_folds_and_dead_peers_do_not_count() -> None:
    peers = {"me": _peer(10, 1), "low": _peer(5, 1), "dead-high": _peer(99, 120)}
    assert is_active(peers, "me", 10, NOW)
    assert not is_active({**peers, "high": _peer(11, 1)}, "me", 10, NOW)
    # kopf pauses every replica of equal priority; so does the loop.
    assert not is_active({**peers, "twin": _peer(10, 1)}, "me", 10, NOW)
    assert is_active({"garbage": "x", "bad": {"lastseen": "never"}}, "me", 1, NOW)


def test_a_read_error_keeps_the_last_decision() -> None:
    calls: list[int] = []

    def read() -> dict[str, Any]:
        calls.append(1)
        raise OSError("apiserver away")

    gate = PeeringGate(read, "me", 1)
    assert asyncio.run(gate.active()) is False  # never confirmed: stay paused
    assert calls == [1]
    standalone = PeeringGate(None, "me", 1)
    assert asyncio.run(standalone.active()) is True
