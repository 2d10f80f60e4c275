"""Network-namespace tier: needs root and `ip netns`; every namespace is removed afterwards."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns.w5t_bed import Bed, WorkerProcess

NAMESPACES = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/netns/" in str(item.path):
            item.add_marker(pytest.mark.netns)


#: One netns bed per machine at a time: it removes every `w5t-` namespace when it
#: starts, so a second run (another work tree) would pull the links from under the first.
LOCK_FILE = Path("/run/w5xde-netns-bed.lock")


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = Bed(NAMESPACES)
        try:
            yield created
        finally:
            created.close()


@pytest.fixture
def running(bed: Bed) -> Iterator[list[WorkerProcess]]:
    """Workers started by a test; whatever is still running at the end is killed."""
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)
