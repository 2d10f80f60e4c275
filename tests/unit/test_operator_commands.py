"""`w5xde operator` refuses bad input with exit 2 and a message naming the option."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from w5xde.operator.commands import add_commands, parse_labels
from w5xde.operator.resources.network_policy import NetworkPolicyOptions

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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--operator-pod-labels", "app"], "--operator-pod-labels"),
        (["--operator-pod-labels", "a=b,bad key=x"], "--operator-pod-labels"),
        (["--operator-pod-labels", "Example.com/a=b"], "--operator-pod-labels"),
        (["--operator-namespace", "Not_A_Namespace"], "--operator-namespace"),
        (
            ["--monitoring-namespace", "ok", "--monitoring-namespace", "-bad"],
            "--monitoring-namespace",
        ),
    ],
)
def test_bad_network_policy_options_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [W5XDE, "operator", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_operator_pod_labels_parse_as_the_api_server_reads_them() -> None:
    assert parse_labels("") == {}
    assert parse_labels(
        "app.kubernetes.io/name=w5xde, app.kubernetes.io/component=operator,empty="
    ) == {
        "app.kubernetes.io/name": "w5xde",
        "app.kubernetes.io/component": "operator",
        "empty": "",
    }
    for bad in ("=x", "a=b=c", "a/=b", "a=" + "v" * 64, "x" * 64 + "=v"):
        with pytest.raises(ValueError, match="label"):
            parse_labels(bad)


def _options(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """The options `w5xde operator ARGS` would run with (run_operator replaced)."""
    from w5xde.operator import runner

    seen: list[Any] = []
    monkeypatch.setattr(runner, "run_operator", lambda options: seen.append(options) or 0)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    parsed = parser.parse_args(["operator", *args])
    assert parsed.handler(parsed) == 0
    return seen[0]


def test_network_policy_is_on_by_default_with_the_namespace_from_the_downward_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("W5XDE_OPERATOR_NAMESPACE", "w5xde-system")
    options = _options(monkeypatch)
    assert options.network_policy == NetworkPolicyOptions("w5xde-system", {}, ())
    monkeypatch.delenv("W5XDE_OPERATOR_NAMESPACE")
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    assert _options(monkeypatch).network_policy.operator_namespace == "elsewhere"
    monkeypatch.delenv("POD_NAMESPACE")
    assert _options(monkeypatch).network_policy == NetworkPolicyOptions()


def test_network_policy_options_reach_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _options(
        monkeypatch,
        "--operator-namespace=ops",
        "--operator-pod-labels=app=op,tier=control",
        "--monitoring-namespace=prom",
        "--monitoring-namespace=grafana",
    )
    assert options.network_policy == NetworkPolicyOptions(
        "ops", {"app": "op", "tier": "control"}, ("prom", "grafana")
    )
    assert _options(monkeypatch, "--no-network-policy").network_policy is None
