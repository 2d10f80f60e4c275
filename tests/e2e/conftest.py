"""The `incremental` marker: a class whose tests are the ordered steps of one scenario.

After a step fails, the later steps are reported as xfail naming the failed step
(they would fail on its leftovers, not on their own), so the failure that matters is
the one reported as failed. This is the pattern of pytest's own documentation.
"""

from __future__ import annotations

import pytest


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if (
        "incremental" in item.keywords
        and call.when == "call"
        and call.excinfo is not None
        and not call.excinfo.errisinstance(pytest.xfail.Exception)
    ):
        item.parent._failed_step = item.name  # type: ignore[union-attr]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "incremental" in item.keywords:
        failed = getattr(item.parent, "_failed_step", None)
        if failed is not None:
            pytest.xfail(f"the scenario's earlier step {failed} failed")
