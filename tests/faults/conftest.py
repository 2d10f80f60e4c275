"""The fault tier's steps are ordered (`incremental`, as in tests/e2e)."""

from e2e.conftest import pytest_runtest_makereport, pytest_runtest_setup

__all__ = ["pytest_runtest_makereport", "pytest_runtest_setup"]
