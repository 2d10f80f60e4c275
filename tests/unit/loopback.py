"""Real workers on loopback for the unit tier: their config, and waiting on a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from w5xde.worker.config import WorkerConfig

KEY = b"test-key-0123456789abcdef"
#: For tests that hand-write zstd frames: every batch a frame of its own (protocol v2).
FRAME_CONTEXT = {"level": 1, "context": "frame"}
T = TypeVar("T")


def worker_config(index: int, ports: list[int], **extra: object) -> WorkerConfig:
    """Worker `t-<index>` of a loopback cluster on `ports`, small batches and buffers."""
    data: dict[str, object] = {
        "name": f"t-{index}",
        "clusterId": "unit",
        "listenHost": "127.0.0.1",
        "metricsPort": 0,
        "peers": [f"127.0.0.1:{port}" for port in ports],
        "workload": {"batchBytes": 16384},
        "compression": {"level": 1},
        "network": {"socketBufferBytes": 262144},
    }
    data.update(extra)
    return WorkerConfig.model_validate(data)


def wait_for(condition: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll `condition` until it returns something true (returned), failing at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value
