"""pytest plugin: skips are an allowlist.

A test that skips for a reason not listed in `tests/allowed_skips.txt` fails the
session (exit code 1), so CI can never pass with a tier missing (no root, no helm, no
test bed).  Deselecting a tier with `-m` (as `make unit` does) is not a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ALLOWED_SKIPS_FILE = Path(__file__).with_name("allowed_skips.txt")


def allowed_skip_reasons(path: Path = ALLOWED_SKIPS_FILE) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def skip_reason(report: pytest.TestReport) -> str:
    """The message a skipped test gave (pytest keeps it as 'Skipped: <reason>')."""
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix("Skipped: ")


def is_allowed(reason: str, allowed: list[str]) -> bool:
    return any(reason.startswith(prefix) for prefix in allowed)


def pytest_configure(config: pytest.Config) -> None:
    # One state per session: a pytest run inside a test (pytester) keeps its own.
    config.pluginmanager.register(SkipAllowlist(), f"skip-allowlist-{id(config)}")


class SkipAllowlist:
    def __init__(self) -> None:
        #: (node id, reason) of every skip the allowlist does not cover.
        self.disallowed: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = skip_reason(report)
        if not is_allowed(reason, allowed_skip_reasons()):
            self.disallowed.append((report.nodeid, reason))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.disallowed:
            return
        terminalreporter.section("skips not in tests/allowed_skips.txt", red=True, bold=True)
        for nodeid, reason in self.disallowed:
            terminalreporter.line(f"{nodeid}: {reason}", red=True)
        terminalreporter.line(
            f"{len(self.disallowed)} test(s) skipped for a reason not allowed: the session fails",
            red=True,
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.disallowed and exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
