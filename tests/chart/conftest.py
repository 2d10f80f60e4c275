"""Chart tier: `helm lint` / `helm template` with the helm of the test bed's build.

Not unit tests: they need `make testbed-bin` (helm), so `make unit` leaves them out
and `make chart-test` / `make test` run them.  Without helm they fail (see
`tests/allowed_skips.txt`: a missing tool is never a reason to skip).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chart/" in str(item.path):
            item.add_marker(pytest.mark.helm)
