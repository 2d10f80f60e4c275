"""Runs as results on the real API server, read back with `kubectl w5xde`."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import OperatorProcess, apply_cluster, get_json

pytestmark = pytest.mark.testbed

PLUGIN = str(Path(sys.executable).with_name("kubectl-w5xde"))
RESULTS_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "results.schema.json").read_text()
)
QUIET = {"rateLimitBytesPerSecond": 2_000_000, "batchBytes": 16384}


def plugin(testbed: Any, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True, text=True, timeout=60, check=False, env=testbed.env(),
    )  # fmt: skip


def _status(testbed: Any, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(testbed, "-n", namespace, "cc", name).get("status", {})
    return status


def test_two_bounded_runs_keep_their_own_figures_and_the_plugin_reads_them(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    spec = {"workers": 2, "duration": "5s", "statusIntervalSeconds": 1, "workload": QUIET}
    apply_cluster(testbed, namespace, "twice", spec)
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "--timeout=120s", "cc/twice"
    )
    first = _status(testbed, namespace, "twice")
    assert [run["id"] for run in first["runs"]] == ["run-1"]
    # Once the pods are gone, READY says so.
    testbed.wait_for(
        lambda: _status(testbed, namespace, "twice").get("ready") == "0/2", 60, "READY 0/2"
    )

    apply_cluster(testbed, namespace, "twice", {**spec, "compression": {"level": 2}})

    def second_done() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "twice")
        done = status.get("phase") == "Completed" and len(status.get("runs", [])) == 2
        return status if done and status.get("observedGeneration") == 2 else None

    status = testbed.wait_for(second_done, 120, f"the second run completed\n{operator.log()}")
    run_1, run_2 = status["runs"]
    assert run_2["id"] == "run-2"
    assert run_2["generation"] == 2
    assert run_2["specDigest"] != run_1["specDigest"]
    # Each run's counters are its own: together they make the cluster's totals.
    for key in ("batches", "rawBytes", "wireBytes"):
        assert run_1["totals"][key] + run_2["totals"][key] == status["totals"][key], key
    assert run_2["totals"]["batches"] > 0
    # The same rate limit: the second run is not the sum of both (the old bug's 2x).
    assert run_2["throughputBytesPerSecond"] < 1.5 * run_1["throughputBytesPerSecond"]
    assert status["throughputBytesPerSecond"] == run_2["throughputBytesPerSecond"]
    assert run_2["throughput"]["samples"] >= 1

    config = testbed.kubeconfig
    rows = list(
        csv.DictReader(
            io.StringIO(
                plugin(testbed, config, "-n", namespace, "results", "twice", "-o", "csv").stdout
            )
        )
    )
    assert [row["id"] for row in rows] == ["run-2"]
    assert float(rows[0]["throughputBytesPerSecond"]) == run_2["throughputBytesPerSecond"]
    assert int(rows[0]["batches"]) == run_2["totals"]["batches"]
    as_json = json.loads(
        plugin(testbed, config, "-n", namespace, "results", "twice", "--run", "run-1").stdout
    )
    # The kept summary through the one results schema (docs/results.md).
    jsonschema.validate(as_json, RESULTS_SCHEMA)
    assert as_json["runId"] == "run-1"
    assert as_json["outcome"] == "Complete"
    assert as_json["startedAt"] == run_1["startedAt"]
    assert as_json["figures"]["throughputBytesPerSecond"] == run_1["throughputBytesPerSecond"]
    assert as_json["figures"]["batches"] == run_1["totals"]["batches"]
    assert as_json["configuration"]["workers"] == 2
    assert as_json["passed"] is run_1["passed"] is True
    compared = plugin(testbed, config, "-n", namespace, "compare", "twice", "run-1", "run-2")
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.startswith("note: run-1 and run-2 measured different specs")
    listed = plugin(testbed, config, "-n", namespace, "runs", "twice")
    assert "run-1" in listed.stdout
    assert "run-2" in listed.stdout


def test_a_run_that_misses_min_throughput_is_not_passed_and_results_check_exits_3(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    spec = {
        "workers": 2,
        "duration": "5s",
        "statusIntervalSeconds": 1,
        "workload": QUIET,
        # The rate limit keeps the run near 4 MB/s: a minimum of 1 TB/s is missed.
        "expect": {"minThroughputBytesPerSecond": 1e12, "minCompressionRatio": 1.1},
    }
    apply_cluster(testbed, namespace, "gated", spec)
    testbed.kubectl(
        "wait", "-n", namespace, "--for=condition=Passed=False", "--timeout=120s", "cc/gated"
    )
    status = _status(testbed, namespace, "gated")
    passed = next(item for item in status["conditions"] if item["type"] == "Passed")
    assert passed["reason"] == "ExpectationMissed"
    assert passed["message"].startswith("run-1: missed minThroughputBytesPerSecond: expected >=")
    assert "minCompressionRatio" not in passed["message"]  # that one held
    (run,) = status["runs"]
    assert run["passed"] is False
    events = get_json(
        testbed, "-n", namespace, "events", "--field-selector", "involvedObject.name=gated"
    )["items"]
    missed = [item for item in events if item["reason"] == "ExpectationMissed"]
    assert missed, events
    assert missed[0]["type"] == "Warning"
    checked = plugin(testbed, testbed.kubeconfig, "-n", namespace, "results", "gated", "--check")
    assert checked.returncode == 3, checked.stderr
    assert "missed minThroughputBytesPerSecond" in checked.stderr
    assert json.loads(checked.stdout)["passed"] is False


def test_plugin_status_pulls_workers_and_fails_cleanly(
    testbed: Any, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    apply_cluster(
        testbed, namespace, "live", {"workers": 2, "statusIntervalSeconds": 1, "workload": QUIET}
    )
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/live")
    config = testbed.kubeconfig
    shown = plugin(testbed, config, "-n", namespace, "status", "live", "--workers")
    assert shown.returncode == 0, shown.stderr
    # Each worker's signed report came back through the API server's pod proxy: a row
    # per worker in the workers table, none with an error.
    workers_table = shown.stdout.split("workers (pulled now)")[1]
    assert "live-0" in workers_table
    assert "live-1" in workers_table
    assert "HTTP" not in workers_table
    assert "signature" not in workers_table
    assert "CompressionCluster live" in shown.stdout

    missing = plugin(testbed, config, "-n", namespace, "status", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"kubectl w5xde: compressioncluster {namespace}/nope not found"
    no_runs = plugin(testbed, config, "-n", namespace, "runs", "live")
    assert no_runs.returncode == 1
    assert "no finished runs yet" in no_runs.stderr
    assert "Traceback" not in missing.stderr + no_runs.stderr

    # A user without RBAC to read clusters: one line, exit 1.
    testbed.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = testbed.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(config.read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = (
        cluster.get("certificate-authority-data")
        or base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    )
    limited = tmp_path / "nobody.kubeconfig"
    limited.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "bed", "cluster": {"server": cluster["server"],
                                                         "certificate-authority-data": ca}}],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "bed", "context": {"cluster": "bed", "user": "nobody",
                                                         "namespace": namespace}}],
                "current-context": "bed",
            }
        )
    )  # fmt: skip
    denied = plugin(testbed, limited, "status", "live")
    assert denied.returncode == 1
    assert denied.stderr.startswith(
        f"kubectl w5xde: not allowed to read compressioncluster {namespace}/live"
    )
    assert len(denied.stderr.strip().splitlines()) == 1


def test_status_shows_every_link_of_an_all_to_all_cluster_with_its_round_trip(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    workload = {**QUIET, "topology": "all-to-all"}
    apply_cluster(
        testbed,
        namespace,
        "mesh3",
        {"workers": 3, "statusIntervalSeconds": 1, "workload": workload},
    )
    testbed.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=120s", "cc/mesh3")

    def links_timed() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "mesh3")
        links = status.get("links") or {}
        timed = links.get("links") == 6 and (links.get("rttP99") or {}).get("minSeconds", 0) > 0
        return status if timed else None

    status = testbed.wait_for(
        links_timed, 120, f"six timed links in status.links\n{operator.log()}"
    )
    pods = get_json(testbed, "-n", namespace, "pods", "-l", status["selector"])["items"]
    node_of = {pod["metadata"]["name"]: pod["spec"]["nodeName"] for pod in pods}
    assert len(node_of) == 3
    shared = {(a, b) for a in node_of for b in node_of if a != b and node_of[a] == node_of[b]}
    # Three pods on the bed's two nodes: at least two of them share one.
    assert len(shared) >= 2
    assert status["links"]["sharingNode"] == len(shared)
    assert status["run"]["linksSharingNode"] == len(shared)
    for item in status["links"]["notable"]:
        assert item["sharedNode"] == ((item["sender"], item["receiver"]) in shared)

    config = testbed.kubeconfig
    summary = plugin(testbed, config, "-n", namespace, "status", "mesh3")
    assert summary.returncode == 0, summary.stderr
    assert f"6 links, {len(shared)} sharing a node" in summary.stdout

    shown = plugin(testbed, config, "-n", namespace, "status", "mesh3", "--workers")
    assert shown.returncode == 0, shown.stderr
    # The per-link table comes after the per-worker table: one row per link, each with
    # its ACK round trip and whether both ends share a node.
    workers_part, links_part = shown.stdout.split("links (pulled now)")
    assert "workers (pulled now)" in workers_part
    rows = [
        cells
        for cells in (line.replace("│", " ").split() for line in links_part.splitlines())
        if cells and cells[0].startswith("mesh3-")
    ]
    assert {(row[0], row[1]) for row in rows} == {
        (a, b) for a in node_of for b in node_of if a != b
    }, links_part
    for row in rows:
        p50, p99 = float(row[7].replace(",", "")), float(row[8].replace(",", ""))
        assert 0 < p50 <= p99 < 5000, row
        assert float(row[2]) > 0, row  # raw MB/s
        assert int(row[9].replace(",", "")) >= 0, row  # TCP retransmits (TCP_INFO)
        assert float(row[10].replace(",", "")) > 0, row  # the kernel's srtt, ms
        assert row[11] == ("yes" if (row[0], row[1]) in shared else "no"), row


def test_samples_repeat_a_bounded_run_with_fresh_workers_and_summarise_the_set(
    testbed: Any, namespace: str, operator: OperatorProcess
) -> None:
    spec = {
        "workers": 2,
        "duration": "6s",
        "samples": 2,
        "statusIntervalSeconds": 1,
        "workload": QUIET,
    }
    apply_cluster(testbed, namespace, "sampled", spec)
    phases_after_first: set[str] = set()

    def set_done() -> dict[str, Any] | None:
        status = _status(testbed, namespace, "sampled")
        if len(status.get("runs", [])) == 1:
            phases_after_first.add(str(status.get("phase")))
        return status if status.get("phase") == "Completed" else None

    status = testbed.wait_for(set_done, 180, f"both samples completed\n{operator.log()}")
    first, second = status["runs"]
    assert first["id"] != second["id"]
    assert [run["outcome"] for run in (first, second)] == ["Completed", "Completed"]
    assert [(run["sample"], run["samples"]) for run in (first, second)] == [(1, 2), (2, 2)]
    assert second["totals"]["batches"] > 0  # the second sample's own counters, fresh workers
    assert first["totals"]["batches"] + second["totals"]["batches"] == status["totals"]["batches"]
    assert "Completed" not in phases_after_first  # only the last sample completes the set
    sample_set = status["samples"]
    assert (sample_set["samples"], sample_set["completed"]) == (2, 2)
    assert sample_set["runIds"] == [first["id"], second["id"]]
    assert sample_set["passed"] is True
    throughput = sample_set["summary"]["throughputBytesPerSecond"]
    assert throughput["samples"] == 2
    assert throughput["min"] <= throughput["mean"] <= throughput["max"]
    passed = next(item for item in status["conditions"] if item["type"] == "Passed")
    assert passed["status"] == "True"

    shown = plugin(testbed, testbed.kubeconfig, "-n", namespace, "results", "sampled", "--check")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    jsonschema.validate(document, RESULTS_SCHEMA)
    assert document["kind"] == "SampleSet"
    assert [sample["runId"] for sample in document["samples"]] == sample_set["runIds"]
    assert document["summary"]["throughputBytesPerSecond"]["mean"] == throughput["mean"]
    assert document["passed"] is True
