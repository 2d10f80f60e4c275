"""The skip allowlist, on a pytest session run inside this test."""

from __future__ import annotations

import pytest

from skip_allowlist import allowed_skip_reasons

SKIPS = """
import pytest

def test_runs():
    pass

def test_netem():
    pytest.skip("no sch_netem on this kernel (5 ms delay): Error")
"""


def test_the_allowlist_holds_only_the_netem_reason() -> None:
    assert allowed_skip_reasons() == ["no sch_netem on this kernel"]


def test_an_allowed_skip_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SKIPS)
    result = pytester.runpytest("-p", "skip_allowlist")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    "skip",
    [
        'pytest.skip("the test bed needs root (network namespaces)")',
        'pytest.importorskip("a_module_nobody_has")',
    ],
)
def test_any_other_skip_fails_the_session(pytester: pytest.Pytester, skip: str) -> None:
    pytester.makepyfile(SKIPS + f"\ndef test_tier():\n    {skip}\n")
    result = pytester.runpytest("-p", "skip_allowlist")
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skips not in tests/allowed_skips.txt*", "*test_tier*"])


def test_a_skip_marker_counts_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.skipif(True, reason="HELM IS MISSING")
        def test_chart():
            pass
        """
    )
    result = pytester.runpytest("-p", "skip_allowlist")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_chart: HELM IS MISSING*"])
