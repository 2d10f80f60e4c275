"""`kubectl w5xde run` on the real test bed: the paths users ask about, measured.

Same node vs across nodes (the placement the scheduler applied, read back from the
pods and the run's links), through a Service (the sender's peer address is the
Service's ClusterIP, from the worker's own report), a node pair that does not exist
(Degraded with the scheduler's words), and the support bundle (its parts, and no
Secret data in any member).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import WORKER_IMAGE, OperatorProcess, get_json

pytestmark = pytest.mark.testbed

PLUGIN = str(Path(sys.executable).with_name("kubectl-w5xde"))
#: Quiet workers: the shared bed's two cores stay usable.
QUIET = ("--rate-limit", "2000000", "--batch-bytes", "16384", "--status-interval", "1")


def plugin(testbed: Any, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *args, "--kubeconfig", str(testbed.kubeconfig)],
        capture_output=True, text=True, timeout=timeout, check=False, env=testbed.env(),
    )  # fmt: skip


def _nodes_of(testbed: Any, namespace: str, name: str) -> dict[str, str]:
    pods = get_json(testbed, "-n", namespace, "pods")["items"]
    return {
        pod["metadata"]["name"]: pod["spec"].get("nodeName", "")
        for pod in pods
        if pod["metadata"]["name"].startswith(f"{name}-")
    }


def test_run_wait_measures_cross_node_then_same_node_links(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    if len(get_json(testbed, "nodes")["items"]) < 2:
        pytest.skip("needs two nodes")
    # -n after the subcommand, as with kubectl.
    across = plugin(
        testbed, "run", "across", "-n", namespace, "--workers", "2", "--duration", "8s",
        "--placement", "crossNode", "--image", WORKER_IMAGE, *QUIET, "--wait",
    )  # fmt: skip
    assert across.returncode == 0, across.stderr + operator.log()
    assert "links 2: 2 cross-node, 0 same-node; placement crossNode, path pod" in across.stdout
    assert "Completed" in across.stdout.splitlines()[0]
    status = get_json(testbed, "-n", namespace, "cc", "across")["status"]
    assert status["runs"][-1]["links"] == 2
    assert status["runs"][-1]["linksSharingNode"] == 0
    assert status["runs"][-1]["nodes"] == 2

    same = plugin(
        testbed, "run", "same", "--workers", "2", "--duration", "8s", "--placement",
        "sameNode", "--image", WORKER_IMAGE, *QUIET, "--wait", "--rm", "--namespace", namespace,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr + operator.log()
    assert "links 2: 0 cross-node, 2 same-node; placement sameNode, path pod" in same.stdout
    # --rm deleted it afterwards.
    testbed.wait_for(
        lambda: testbed.kubectl("get", "cc", "same", "-n", namespace, check=False).returncode != 0,
        60,
        "the sameNode cluster deleted by --rm",
    )
    # `status` without a name lists the namespace's clusters, -o wide with the placement.
    listed = plugin(testbed, "status", "-n", namespace, "-o", "wide")
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("across"))
    assert row[:3] == ["across", "0/2", "Completed"]
    assert "crossNode" in row


def test_service_path_goes_through_each_peers_cluster_ip(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    created = plugin(
        testbed, "run", "svc", "-n", namespace, "--workers", "2", "--path", "service",
        "--image", WORKER_IMAGE, *QUIET,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/svc")
    services = {
        item["metadata"]["name"]: item["spec"]
        for item in get_json(testbed, "-n", namespace, "services")["items"]
    }
    assert services["svc-0"]["type"] == "ClusterIP"
    assert services["svc-1"]["type"] == "ClusterIP"
    pod_ips = {
        pod["metadata"]["name"]: pod["status"]["podIP"]
        for pod in get_json(testbed, "-n", namespace, "pods")["items"]
    }

    from w5xde.plugin.source import ClusterSource

    source = ClusterSource(str(testbed.kubeconfig), None, namespace)

    def links_with_addresses() -> dict[str, Any] | None:
        reports = source.worker_reports("svc", ["svc-0", "svc-1"])
        found = {}
        for pod, report in reports.items():
            if isinstance(report, str):
                return None
            for link in report.links:
                if not link.peer_address or link.raw_bytes == 0:
                    return None
                found[pod] = link
        return found if len(found) == 2 else None

    links = testbed.wait_for(links_with_addresses, 90, f"both links flowing\n{operator.log()}")
    for sender, receiver in (("svc-0", "svc-1"), ("svc-1", "svc-0")):
        link = links[sender]
        assert link.peer == receiver
        # The sender's socket reached the receiver's Service, not its pod: kube-proxy
        # translated every byte of this link.
        assert link.peer_address == f"{services[receiver]['clusterIP']}:7070"
        assert not link.peer_address.startswith(f"{pod_ips[receiver]}:")


def test_a_node_pair_that_does_not_exist_degrades_with_the_schedulers_words(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    created = plugin(
        testbed, "run", "pair", "-n", namespace, "--workers", "2", "--placement", "nodes",
        "--nodes", "no-such-node-a,no-such-node-b", "--image", WORKER_IMAGE, *QUIET,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Degraded", "--timeout=90s", "cc/pair")
    conditions = get_json(testbed, "-n", namespace, "cc", "pair")["status"]["conditions"]
    degraded = next(item for item in conditions if item["type"] == "Degraded")
    assert degraded["reason"] == "WorkerCannotRun"
    assert "Unschedulable" in degraded["message"]
    assert "affinity" in degraded["message"]  # the scheduler's words: node affinity/selector
    assert not [node for node in _nodes_of(testbed, namespace, "pair").values() if node]


def test_report_bundle_has_the_parts_and_no_secret_data(
    testbed: Any, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    created = plugin(
        testbed, "run", "bundled", "-n", namespace, "--workers", "2", "--image", WORKER_IMAGE,
        *QUIET,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/bundled"
    )
    target = tmp_path / "bundle.tar.gz"
    made = plugin(testbed, "report", "bundled", "-n", namespace, "-f", str(target))
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(target)
    with tarfile.open(target) as archive:
        members = {
            member.name.split("/", 1)[1]: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }
    names = set(members)
    for part in (
        "cluster.yaml", "events.yaml", "versions.yaml", "objects/statefulset-bundled.yaml",
        "objects/service-bundled.yaml", "objects/serviceaccount-bundled-worker.yaml",
        "objects/pod-bundled-0.yaml", "objects/pod-bundled-1.yaml",
        "objects/secret-bundled-key.yaml", "logs/workers/bundled-0-worker.log",
        "logs/workers/bundled-1-worker.log", "reports/bundled-0.json", "reports/bundled-1.json",
    ):  # fmt: skip
        assert part in names, sorted(names)
    assert b"kind: CompressionCluster" in members["cluster.yaml"]
    assert b"crd:" in members["versions.yaml"]
    assert b"apiServer:" in members["versions.yaml"]
    # The operator of this test runs as a process, not a pod: none to find (the chart's
    # install test covers operator pods); the bundle says nothing is missing for it.
    # No Secret's data, in any form, in any member.
    secrets = get_json(testbed, "-n", namespace, "secrets")["items"]
    values = [
        value.encode()
        for secret in secrets
        for value in (secret.get("data") or {}).values()
        if len(value) >= 8
    ]
    values += [base64.b64decode(value) for value in list(values)]
    assert values, "the cluster's key and CA Secrets exist"
    for path, content in members.items():
        for value in values:
            assert value not in content, f"{path} holds Secret data"
    assert b"dataKeys" in members["objects/secret-bundled-key.yaml"]


@pytest.mark.parametrize(
    ("flags", "field", "rule"),
    [
        (
            ["--placement", "preferred", "--set", "network.hostNetwork=true"],
            "spec.network.hostNetwork",
            "at most one may run per node",
        ),
        (
            ["--placement", "crossNode", "--set", "network.hostNetwork=true",
             "--set", 'network.sysctls={"net.ipv4.tcp_sack": "1"}'],
            "spec.network.sysctls",
            "cannot set net.* sysctls",
        ),
        (["--set", "placementNodes=[\"a\"]"], "spec.placementNodes", "exactly when placement"),
    ],
)  # fmt: skip
def test_the_api_server_refuses_unsafe_paths_naming_the_field(
    testbed: Any, namespace: str, crd: str, flags: list[str], field: str, rule: str
) -> None:
    """The CEL rules themselves (the plugin's own check would stop these first, so the
    manifest goes to the server with kubectl)."""
    manifest = plugin(testbed, "run", "unsafe", *flags, "--dry-run=client", "-o", "json")
    # The plugin refuses it with the same words, before any request...
    assert manifest.returncode == 2
    assert rule in manifest.stderr
    body = {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": "unsafe"},
        "spec": _spec_of(flags),
    }
    import json

    refused = testbed.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert any(field in line and rule in line for line in refused.stderr.splitlines()), (
        refused.stderr
    )


def _spec_of(flags: list[str]) -> dict[str, Any]:
    from w5xde.plugin import run
    from w5xde.plugin.main import parser

    return run.build_spec(parser().parse_args(["run", "x", *flags]))


def test_the_network_path_cannot_change(testbed: Any, namespace: str, crd: str) -> None:
    import json

    body = {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": "fixed", "namespace": namespace},
        "spec": {"network": {"path": "service"}},
    }
    testbed.kubectl("create", "-f", "-", input=json.dumps(body))
    changed = testbed.kubectl(
        "patch", "cc", "fixed", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"network": {"path": "pod"}}}', check=False,
    )  # fmt: skip
    assert changed.returncode != 0
    assert "network.path cannot change" in changed.stderr
