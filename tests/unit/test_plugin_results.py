"""`kubectl w5xde results -o json --check`, `compare --fail-if-slower`, `status -o json`:
through the one results schema, with their exit codes, without a cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest

from w5xde.plugin import main as plugin_main

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())


def _run(run_id: str, mean: float, ci95: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "outcome": "Completed",
        "generation": 2,
        "specDigest": "abc123",
        "startedAt": "2026-12-06T12:00:00Z",
        "completedAt": "2026-12-06T12:00:20Z",
        "seconds": 20.0,
        "workers": 2,
        "links": 2,
        "linksSharingNode": 0,
        "throughputBytesPerSecond": mean,
        "compressionRatio": 2.0,
        "totals": {"batches": 2000, "rawBytes": 4_000_000_000, "lostBatches": 0},
        "throughput": {"mean": mean, "ci95": ci95, "min": mean - 1, "max": mean + 1, "samples": 4},
        "cpuSecondsPerGb": {"mean": 3.25, "ci95": 0.1, "min": 3.1, "max": 3.4, "samples": 4},
        "expectations": [
            {"expectation": "maxLostBatches", "expected": 0, "actual": 0, "passed": True}
        ],
        "passed": True,
        **extra,
    }


MISSED = [
    {"expectation": "minThroughputBytesPerSecond", "expected": 3e8, "actual": 1.8e8,
     "passed": False},
    {"expectation": "maxLostBatches", "expected": 0, "actual": 0, "passed": True},
]  # fmt: skip


def _cluster(*runs: dict[str, Any]) -> dict[str, Any]:
    return {
        "spec": {"workers": 2, "duration": "20s", "image": "registry.local/w5xde-worker:0.1.0"},
        "status": {
            "phase": "Completed",
            "throughputBytesPerSecond": 2e8,
            "cpuSecondsPerGb": 3.5,
            "reporting": {"foldedAt": "2026-12-06T12:00:21Z"},
            "runs": list(runs),
        },
    }


class _Source:
    namespace = "ns"
    cluster_object: ClassVar[dict[str, Any]] = {}

    def __init__(self, *_: object) -> None:
        pass

    def cluster(self, name: str) -> dict[str, Any]:
        return self.cluster_object


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(cluster: dict[str, Any], *args: str) -> int:
        monkeypatch.setattr(_Source, "cluster_object", cluster)
        monkeypatch.setattr(plugin_main, "ClusterSource", _Source)
        return plugin_main.main(list(args))

    return run


def test_results_json_is_a_run_result_of_the_schema(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = plugin(_cluster(_run("run-1", 2e8, 5e6)), "results", "demo", "-o", "json")
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, SCHEMA)
    assert document["runId"] == "run-1"
    assert document["outcome"] == "Complete"
    assert document["figures"]["throughputBytesPerSecond"] == 2e8
    assert document["figures"]["cpu"]["cpuSecondsPerGb"] == 3.25
    assert document["configuration"]["compression"]["level"] == 3  # defaulted
    assert document["versions"]["w5xde"] == "0.1.0"  # the worker image's tag
    assert document["passed"] is True


def test_results_carry_the_versions_the_run_s_workers_reported(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = {"w5xde": "0.1.1", "zstandard": "0.25.0", "libzstd": "1.5.7",
           "openssl": "OpenSSL 3.0.17", "python": "3.11.7", "kernel": "6.1.0"}  # fmt: skip
    code = plugin(_cluster(_run("run-1", 2e8, 5e6, versions=ran)), "results", "demo", "-o", "json")
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, SCHEMA)
    assert document["versions"] == ran  # not the image tag (0.1.0)


def test_results_check_exits_3_naming_the_missed_expectation(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    missed = _run("run-2", 1.8e8, 5e6, expectations=MISSED, passed=False)
    assert plugin(_cluster(missed), "results", "demo", "--check") == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["passed"] is False  # the result is still printed
    assert "run-2: missed minThroughputBytesPerSecond: expected >= 3e+08" in captured.err
    assert "maxLostBatches" not in captured.err
    # The same run without --check only prints; a passed run passes the check.
    assert plugin(_cluster(missed), "results", "demo") == 0
    assert plugin(_cluster(_run("run-1", 2e8, 5e6)), "results", "demo", "--check") == 0


def test_results_check_fails_a_run_that_was_never_judged(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = _run("run-1", 2e8, 5e6, outcome="SpecChanged", expectations=[], passed=None)
    assert plugin(_cluster(changed), "results", "demo", "--check") == 3
    assert "run-1 was not judged" in capsys.readouterr().err


def test_compare_fails_only_when_slower_outside_both_intervals(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base, close = _run("run-1", 200e6, 5e6), _run("run-2", 192e6, 5e6)
    slow = _run("run-3", 150e6, 5e6)
    cluster = _cluster(base, close, slow)
    assert plugin(cluster, "compare", "demo", "run-1", "run-2", "--fail-if-slower", "5%") == 0
    assert plugin(cluster, "compare", "demo", "run-1", "run-3", "--fail-if-slower", "5%") == 3
    assert "run-3 is slower than run-1" in capsys.readouterr().err
    # Without the flag compare never fails on figures; a slowdown within tolerance passes.
    assert plugin(cluster, "compare", "demo", "run-1", "run-3") == 0
    assert plugin(cluster, "compare", "demo", "run-1", "run-3", "--fail-if-slower", "30%") == 0
    assert plugin(cluster, "compare", "demo", "run-1", "run-3", "--fail-if-slower", "x") == 2
    assert "--fail-if-slower" in capsys.readouterr().err


def test_status_json_prints_the_configuration_then_an_interval(
    plugin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # `status -o json --watch` streams these lines (without --watch, `-o json` prints the
    # object, as kubectl does); one round of the stream, without its endless watch:
    del plugin
    _Source.cluster_object = _cluster()
    args = argparse.Namespace(name="demo", watch=False, interval=1.0)
    assert plugin_main._status_json(_Source(), args) == 0  # type: ignore[arg-type]
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["kind"] == "Configuration"
    assert first["configuration"]["workers"] == 2
    assert second["kind"] == "Interval"
    assert second["throughputBytesPerSecond"] == 2e8
    assert second["cpuSecondsPerGb"] == 3.5
