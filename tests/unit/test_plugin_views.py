"""`kubectl w5xde` renderings from a status, without a cluster."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console

from w5xde.plugin import views


def _run(
    run_id: str, mean: float, ci95: float, digest: str = "abc123", **extra: Any
) -> dict[str, Any]:
    return {
        "id": run_id,
        "outcome": "Completed",
        "generation": 2,
        "specDigest": digest,
        "seconds": 20.0,
        "throughputBytesPerSecond": mean,
        "compressionRatio": 2.0,
        "batchesPerSecond": 100.0,
        "totals": {"batches": 2000, "rawBytes": 4_000_000_000, "lostBatches": 0},
        "throughput": {"mean": mean, "ci95": ci95, "min": mean - 1, "max": mean + 1, "samples": 4},
        "batches": {"mean": 100.0, "ci95": 5.0, "min": 95, "max": 105, "samples": 4},
        **extra,
    }


STATUS = {
    "phase": "Completed",
    "ready": "0/2",
    "totals": {"batches": 4000},
    "runs": [_run("run-1", 200e6, 5e6), _run("run-2", 180e6, 4e6, digest="def456")],
}


def test_results_csv_parses_and_matches_the_status() -> None:
    rows = list(csv.DictReader(io.StringIO(views.results_csv(STATUS, None))))
    assert len(rows) == 1
    assert rows[0]["id"] == "run-2"  # the last run by default
    assert float(rows[0]["throughputBytesPerSecond"]) == 180e6
    assert float(rows[0]["throughputCi95"]) == 4e6
    assert int(rows[0]["batches"]) == 2000
    first = list(csv.DictReader(io.StringIO(views.results_csv(STATUS, "run-1"))))
    assert first[0]["specDigest"] == "abc123"


def test_results_json_is_the_kept_summary() -> None:
    chosen = views.find_run(STATUS, "run-1")
    assert chosen is not None
    assert json.loads(views.results_json(chosen))["throughput"]["mean"] == 200e6
    assert views.find_run(STATUS, "run-9") is None


def test_compare_says_the_specs_differ_first_and_whether_intervals_overlap() -> None:
    lines = views.compare_lines(STATUS["runs"][0], STATUS["runs"][1])
    assert lines[0].startswith("note: run-1 and run-2 measured different specs")
    throughput = next(line for line in lines if line.startswith("throughput"))
    assert "-10.0 %" in throughput
    assert "do not overlap" in throughput
    close = views.compare_lines(_run("a", 200e6, 15e6), _run("b", 190e6, 15e6))
    assert not close[0].startswith("note")
    assert "intervals overlap" in close[0]


def test_status_view_renders_every_part() -> None:
    status = {**STATUS, "notableWorkers": [{"name": "d-1", "reason": "Stale", "node": "n2"}]}
    console = Console(file=io.StringIO(), width=200)
    console.print(views.status_view("demo", status, {"demo-0": "HTTP 503"}))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for needle in ("CompressionCluster demo", "d-1", "Stale", "run-2", "HTTP 503", "0/2"):
        assert needle in text, needle
