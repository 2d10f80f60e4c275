"""What a user reads in `kubectl get compressionclusters`, checked the same way by every journey."""

from __future__ import annotations

from typing import Any

COLUMNS = ("READY", "PHASE", "THROUGHPUT", "RATIO", "BATCHES/S")


def assert_running_row(table: str, status: dict[str, Any], ready: str) -> None:
    """The first row shows READY `ready`, phase Running and the folded throughput."""
    header, row = table.splitlines()[:2]
    for column in COLUMNS:
        assert column in header, (column, header)
    assert ready in row, row
    assert "Running" in row, row
    assert status["throughput"] in row, (status["throughput"], row)
