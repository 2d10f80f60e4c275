"""`kubectl w5xde` behaves like kubectl: flags anywhere, listings, one-line errors."""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import urllib3.exceptions as http_errors
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from w5xde import kube_errors
from w5xde.plugin import listing
from w5xde.plugin.main import main, parser
from w5xde.plugin.source import OperatorDeployment

PLUGIN = str(Path(sys.executable).with_name("kubectl-w5xde"))


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "foo", "status", "demo"],
        ["status", "demo", "-n", "foo"],
        ["status", "-n", "foo", "demo"],
        ["status", "demo", "--namespace=foo"],
        ["--namespace", "foo", "results", "demo", "-o", "csv"],
        ["compare", "demo", "run-1", "run-2", "-n", "foo"],
    ],
)
def test_the_namespace_flag_works_before_and_after_the_subcommand(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert args.namespace == "foo"
    assert args.name == "demo"


def test_a_flag_after_the_subcommand_does_not_erase_one_before_it() -> None:
    args = parser().parse_args(["--context", "bed", "--kubeconfig", "k", "status", "-n", "x"])
    assert (args.context, args.kubeconfig, args.namespace) == ("bed", "k", "x")
    args = parser().parse_args(["status", "demo"])
    assert (args.context, args.kubeconfig, args.namespace) == (None, None, None)


def test_status_without_a_name_lists_and_takes_all_namespaces_and_outputs() -> None:
    args = parser().parse_args(["status", "-A", "-o", "wide"])
    assert args.name is None
    assert args.all_namespaces
    assert args.output == "wide"
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["status", "-o", "xml"])
    assert exit_info.value.code == 2


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "a COMMAND is required" in capsys.readouterr().err


def _refused() -> http_errors.MaxRetryError:
    reason = http_errors.NewConnectionError(
        object(),  # type: ignore[arg-type]
        "HTTPSConnection(host='127.0.0.1', port=1): Failed to establish a new connection:"
        " [Errno 111] Connection refused",
    )
    return http_errors.MaxRetryError(None, "/version", reason)  # type: ignore[arg-type]


def test_an_unreachable_server_is_one_line_naming_the_server() -> None:
    message = kube_errors.describe(_refused(), "https://127.0.0.1:1")
    assert message == (
        "cannot reach the API server at https://127.0.0.1:1 (Connection refused): is it"
        " running, and is --kubeconfig and --context the one you meant?"
    )
    operator = kube_errors.describe(_refused(), "", kube_errors.OPERATOR_HINTS)
    assert operator is not None
    assert "$KUBECONFIG" in operator
    assert "--kubeconfig" not in operator


def test_tls_auth_and_config_failures_each_name_what_to_fix() -> None:
    tls = http_errors.MaxRetryError(
        None,  # type: ignore[arg-type]
        "/",
        http_errors.SSLError(
            ssl.SSLCertVerificationError(
                1,
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed"
                " certificate (_ssl.c:1006)",
            )
        ),
    )
    assert (kube_errors.describe(tls, "https://h:6443") or "").startswith(
        "TLS with the API server at https://h:6443 failed (certificate verify failed:"
        " self-signed certificate): check"
    )
    unauthorized = ApiException(status=401, reason="Unauthorized")
    assert "refused the kubeconfig's credentials (401" in (kube_errors.describe(unauthorized) or "")
    missing = kube_errors.describe(
        ConfigException("Invalid kube-config file. No configuration found.")
    )
    assert missing is not None
    assert missing.startswith("no kubeconfig found")
    context = kube_errors.describe(
        ConfigException("Invalid kube-config file. Expected object with name x in /k/contexts list")
    )
    assert context == (
        "context 'x' is not in the kubeconfig /k: choose one `kubectl config get-contexts` lists"
    )


def test_other_errors_are_not_disguised_as_configuration() -> None:
    assert kube_errors.describe(KeyError("spec")) is None
    assert kube_errors.describe(ApiException(status=500, reason="boom")) is None


def test_a_closed_port_gives_one_line_and_exit_1(tmp_path: Path) -> None:
    """The issue's measure: a kubeconfig pointing at a closed port, the real binary."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "closed.kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )
    for argv in (["status", "demo"], ["status"], ["--version"], ["runs", "demo", "-n", "x"]):
        done = subprocess.run(
            [PLUGIN, *argv, "--kubeconfig", str(config)] if argv != ["--version"]
            else [PLUGIN, "--kubeconfig", str(config), "--version"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines == [
            f"kubectl w5xde: cannot reach the API server at https://127.0.0.1:{port}"
            " (Connection refused): is it running, and is --kubeconfig and --context the one"
            " you meant?"
        ], argv


def test_a_missing_kubeconfig_file_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [PLUGIN, "status", "demo", "--kubeconfig", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr
        == f"kubectl w5xde: kubeconfig {tmp_path / 'nope'} does not exist: check --kubeconfig\n"
    )


def _cluster(name: str, namespace: str = "ns", **status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"workers": 2, "placement": "crossNode", "network": {"path": "service"}},
        "status": status,
    }


def test_listing_rows_are_kubectl_get_columns() -> None:
    now = datetime(2026, 1, 1, 0, 12, 5, tzinfo=UTC)
    item = _cluster(
        "demo", ready="2/2", phase="Running", throughput="1.0 MB/s", compressionRatio=2.345,
        batchesPerSecond=1234.4, links={"links": 2, "sharingNode": 0},
        runs=[{"id": "run-3"}],
    )  # fmt: skip
    assert listing.row(item, wide=False, now=now) == [
        "demo", "2/2", "Running", "1.0 MB/s", "2.35", "1,234", "12m",
    ]  # fmt: skip
    assert listing.row(item, wide=True, now=now)[7:] == [
        "2", "crossNode", "service", "2", "0", "run-3",
    ]  # fmt: skip
    assert listing.age("2026-01-01T00:00:00Z", datetime(2026, 1, 3, tzinfo=UTC)) == "2d"
    assert listing.age("", now) == "<unknown>"


def test_json_and_yaml_of_several_clusters_are_a_list() -> None:
    import json

    import yaml

    items = [_cluster("a"), _cluster("b")]
    parsed = json.loads(listing.dump(listing.as_list(items), "json"))
    assert parsed["kind"] == "List"
    assert [item["metadata"]["name"] for item in parsed["items"]] == ["a", "b"]
    assert yaml.safe_load(listing.dump(listing.as_list(items), "yaml")) == parsed


def test_the_operators_absence_is_a_warning_and_its_version_a_line() -> None:
    assert listing.operator_warning(None) is None
    assert "no w5xde operator is installed" in (listing.operator_warning([]) or "")
    stuck = OperatorDeployment("w5xde", "w5xde", "0.1.0", "ghcr.io/w5xde/op:0.1.0", 1, 0)
    warning = listing.operator_warning([stuck])
    assert warning is not None
    assert "w5xde/w5xde: 0 ready" in warning
    assert "ImagePullBackOff" in warning
    running = OperatorDeployment("w5xde", "w5xde", "0.1.0", "img", 1, 1)
    assert listing.operator_warning([stuck, running]) is None
    assert listing.operator_lines([running]) == [
        "operator: 0.1.0 (w5xde/w5xde, image img, 1/1 ready)"
    ]
    assert listing.operator_lines([])[0].startswith("operator: not installed")


def test_only_an_unreconciled_cluster_asks_about_the_operator() -> None:
    fresh = {"metadata": {"generation": 1}}
    assert listing.unreconciled(fresh)
    assert listing.unreconciled(
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    )
    assert not listing.unreconciled(
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}
    )
