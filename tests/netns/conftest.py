"""Network-namespace tier: needs root and `ip netns`; every namespace is removed afterwards."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from netns.w5t_bed import Bed

NAMESPACES = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/netns/" in str(item.path):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    created = Bed(NAMESPACES)
    try:
        yield created
    finally:
        created.close()
