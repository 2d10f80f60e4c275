"""`w5xde operator` refuses bad input with exit 2 and a message naming the option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

W5XDE = str(Path(sys.executable).with_name("w5xde"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-mode", "loud"], "--log-mode"),
        (["--report-concurrency", "0"], "--report-concurrency"),
        (["--metrics-port", "70000"], "--metrics-port"),
        (["--liveness", "x"], "--liveness"),
        (["--namespace", "a", "--all-namespaces"], "--all-namespaces"),
    ],
)
def test_bad_operator_options_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [W5XDE, "operator", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_crd_stdout_is_the_crd() -> None:
    result = subprocess.run(
        [W5XDE, "crd", "--stdout"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "kind: CustomResourceDefinition" in result.stdout
