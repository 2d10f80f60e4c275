"""Fixtures of the unit tier."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from unit.loopback import KEY, worker_config
from w5xde.local.run import free_ports
from w5xde.worker.runtime import Worker


@pytest.fixture
def workers() -> Iterator[Callable[..., list[Worker]]]:
    """Starts a loopback cluster of `count` workers (config `extra` for all); stops them."""
    started: list[Worker] = []

    def start(count: int, **extra: object) -> list[Worker]:
        ports = free_ports(count)
        group = [Worker(worker_config(index, ports, **extra), KEY) for index in range(count)]
        for worker in group:
            worker.start()
        started.extend(group)
        return group

    yield start
    for worker in started:
        worker.stop(grace_seconds=0.2)
