"""The worker-side publisher's pure parts (the real API path is in tests/testbed_api)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from w5xde.api.v1alpha1 import WorkerReport
from w5xde.worker.config import StatusTarget
from w5xde.worker.status_publisher import (
    JITTER,
    MAX_BACKOFF_SECONDS,
    StatusPublisher,
    next_delay,
    status_patch,
)


def test_patch_touches_only_the_own_key_and_clears_stale() -> None:
    report = WorkerReport(node="n1", batches=5, stale=True)
    patch = status_patch("demo-1", report, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert list(patch) == ["status"]
    assert list(patch["status"]) == ["workers"]
    entry = patch["status"]["workers"]["demo-1"]
    assert entry["lastReport"] == "2026-01-02T03:04:05Z"
    assert entry["stale"] is False
    assert entry["batches"] == 5
    assert entry["socketBuffer"] == {"requested": 0, "effectiveSend": 0, "effectiveReceive": 0}


def test_delay_has_jitter_and_backs_off_with_a_cap() -> None:
    rng = random.Random(7)
    delays = [next_delay(10, 0, rng) for _ in range(200)]
    assert min(delays) >= 10 * (1 - JITTER)
    assert max(delays) <= 10 * (1 + JITTER)
    assert len({round(delay, 3) for delay in delays}) > 100
    assert next_delay(10, 1, rng) >= 20 * (1 - JITTER)
    assert next_delay(10, 3, rng) <= 30 * (1 + JITTER)  # capped near the stale threshold
    assert next_delay(1, 10, rng) <= 30 * (1 + JITTER)
    assert next_delay(100, 30, rng) <= MAX_BACKOFF_SECONDS * (1 + JITTER)
    assert next_delay(600, 3, rng) >= 600 * (1 - JITTER)  # never below the interval


def test_failures_are_counted_never_raised() -> None:
    def no_credentials() -> object:
        raise RuntimeError("not in a cluster")

    publisher = StatusPublisher(
        StatusTarget(namespace="ns", cluster="demo", interval_seconds=1),
        "demo-0",
        WorkerReport,
        lambda workers: None,
        api_client_factory=no_credentials,  # type: ignore[arg-type]
    )
    assert publisher.publish_once() is False
    assert publisher.publish_once() is False
    assert publisher.failures == 2
    assert publisher.published == 0
